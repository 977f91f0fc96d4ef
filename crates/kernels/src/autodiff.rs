//! The autodiff implementation: one graph node for SiLU with a hand-written backward step.
//!
//! The forward pass asks the inner backend for `x * s` and `s = sigmoid(x)` together and keeps
//! `x` and `s`; the backward pass is one [`SiluKernels::silu_backward`] call, with no `exp`.
//! burn's composed SiLU instead records a sigmoid and a product, and its sigmoid step
//! recomputes `sigmoid(x)` from `x` in the backward pass.

use burn::backend::Autodiff;
use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;

use crate::{FusedActivationOps, SiluKernels};

/// SiLU's backward step; its state is the input and its sigmoid, both on the inner backend.
#[derive(Debug)]
struct FusedSiluBackward;

impl<B: Backend + SiluKernels> Backward<B, 1> for FusedSiluBackward {
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

impl<B, C> FusedActivationOps for Autodiff<B, C>
where
    B: Backend + FusedActivationOps + SiluKernels,
    C: CheckpointStrategy,
{
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        // Compute-bound: the state is kept rather than recomputed under gradient checkpointing,
        // since recomputing it is the cost this operation exists to avoid.
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
}
