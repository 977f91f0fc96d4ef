//! The autodiff implementations: one graph node per fused operation, with a hand-written
//! backward step.
//!
//! Each forward pass asks the inner backend for its output together with what the backward pass
//! reads (SiLU and softplus: the sigmoid; sigmoid and `tanh`: the output; the GRU gate:
//! `[r | t | u]`), so no backward step runs an `exp`. burn's composed versions record one node
//! per primitive operation, and its sigmoid step recomputes `sigmoid(x)` from `x`.
//!
//! The states are kept rather than recomputed under gradient checkpointing (`compute_bound`),
//! since recomputing them is the cost these operations exist to avoid.

use burn::backend::Autodiff;
use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;

use crate::{ActivationKernels, FusedActivationOps};

/// SiLU's backward step; its state is the input and its sigmoid, both on the inner backend.
#[derive(Debug)]
struct FusedSiluBackward;

impl<B: Backend + ActivationKernels> Backward<B, 1> for FusedSiluBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (x, sigmoid) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::silu_backward(x, sigmoid, grad)
        });
    }
}

/// The sigmoid's backward step; its state is the output.
#[derive(Debug)]
struct FusedSigmoidBackward;

impl<B: Backend + ActivationKernels> Backward<B, 1> for FusedSigmoidBackward {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let output = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::fused_sigmoid_backward(output, grad)
        });
    }
}

/// `tanh`'s backward step; its state is the output.
#[derive(Debug)]
struct FusedTanhBackward;

impl<B: Backend + ActivationKernels> Backward<B, 1> for FusedTanhBackward {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let output = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::tanh_backward(output, grad)
        });
    }
}

/// `softplus`'s backward step; its state is the sigmoid of the input (the derivative).
#[derive(Debug)]
struct FusedSoftplusBackward;

impl<B: Backend + ActivationKernels> Backward<B, 1> for FusedSoftplusBackward {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let sigmoid = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::softplus_backward(sigmoid, grad)
        });
    }
}

/// The GRU gate's backward step, for both parents (the pre-activations and the state) in one
/// kernel call; its state is the pre-activations, the state and the kept `[r | t | u]`.
#[derive(Debug)]
struct FusedGruGateBackward;

impl<B: Backend + ActivationKernels> Backward<B, 2> for FusedGruGateBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (parts, h, gates) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [parts_node, h_node] = ops.parents;
        if parts_node.is_none() && h_node.is_none() {
            return;
        }
        let (d_parts, d_h) = B::gru_gate_backward(parts, h, gates, grad);
        if let Some(node) = parts_node {
            grads.register::<B>(node.id, d_parts);
        }
        if let Some(node) = h_node {
            grads.register::<B>(node.id, d_h);
        }
    }
}

impl<B, C> FusedActivationOps for Autodiff<B, C>
where
    B: Backend + FusedActivationOps + ActivationKernels,
    C: CheckpointStrategy,
{
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        match FusedSiluBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (output, sigmoid) = B::silu_keeping_sigmoid(x.clone());
                prep.finish((x, sigmoid), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_silu(x)),
        }
    }

    fn fused_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        match FusedSigmoidBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::fused_sigmoid(x);
                prep.finish(output.clone(), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_sigmoid(x)),
        }
    }

    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        match FusedTanhBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::fused_tanh(x);
                prep.finish(output.clone(), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_tanh(x)),
        }
    }

    fn fused_softplus(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        match FusedSoftplusBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (output, sigmoid) = B::softplus_keeping_sigmoid(x);
                prep.finish(sigmoid, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_softplus(x)),
        }
    }

    fn fused_gru_gate(
        parts: FloatTensor<Self>,
        h: FloatTensor<Self>,
        update_shift: f32,
    ) -> FloatTensor<Self> {
        let (parts, parts_node) = parts.into_parts();
        let (h, h_node) = h.into_parts();
        match FusedGruGateBackward
            .prepare::<C>([parts_node, h_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (output, gates) =
                    B::gru_gate_keeping_gates(parts.clone(), h.clone(), update_shift);
                prep.finish((parts, h, gates), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_gru_gate(parts, h, update_shift)),
        }
    }
}
