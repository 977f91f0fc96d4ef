//! The flex implementations: the [`simd`](crate::simd) kernels over the tensors' `f32` buffers.
//!
//! Other dtypes (`f64`, half precision) take the composed path. Inputs that are not one dense
//! block (transposed or strided views) are copied to a dense buffer first. A buffer that no
//! other tensor shares is overwritten in place, as flex's own element-wise operations do.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{Bytes, DType, Flex, TensorMetadata};

use crate::{
    ActivationKernels, FusedActivationOps, composed_gru_gate_backward,
    composed_gru_gate_keeping_gates, composed_silu_backward, composed_silu_keeping_sigmoid,
    composed_softplus, composed_softplus_keeping_sigmoid, composed_tanh_backward, simd,
};

/// A unary element-wise kernel: in place, or from an input slice into an output slice.
struct Unary {
    in_place: fn(&mut [f32]),
    slice: fn(&[f32], &mut [f32]),
}

/// Applies `kernel` to an `f32` tensor, in place when its buffer is not shared.
fn apply_unary(x: FlexTensor, kernel: Unary) -> FlexTensor {
    let mut x = dense(x);
    if let Some(values) = unique_values(&mut x) {
        (kernel.in_place)(values);
        return x;
    }
    let input = dense_values(&x);
    let mut output = vec![0.0f32; input.len()];
    (kernel.slice)(input, &mut output);
    from_values(output, &x)
}

/// `grad *= f(kept)` element-wise for a backward pass, in place when `grad` is not shared.
fn apply_backward(
    kept: FlexTensor,
    grad: FlexTensor,
    kernel: fn(&[f32], &mut [f32]),
) -> FlexTensor {
    assert_same_shape("backward", &kept, &grad);
    let kept = dense(kept);
    let mut grad = dense(grad);
    if let Some(values) = unique_values(&mut grad) {
        kernel(dense_values(&kept), values);
        return grad;
    }
    let mut output = dense_values(&grad).to_vec();
    kernel(dense_values(&kept), &mut output);
    from_values(output, &grad)
}

fn assert_same_shape(what: &str, a: &FlexTensor, b: &FlexTensor) {
    assert!(
        a.shape() == b.shape(),
        "{what}: shapes differ: {:?} and {:?}",
        a.shape(),
        b.shape()
    );
}

fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

impl FusedActivationOps for Flex {
    fn fused_silu(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return composed_silu_keeping_sigmoid::<Flex>(x).0;
        }
        apply_unary(
            x,
            Unary {
                in_place: simd::silu_in_place,
                slice: simd::silu_slice,
            },
        )
    }

    fn fused_sigmoid(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return <Flex as burn::backend::ops::ActivationOps<Flex>>::sigmoid(x);
        }
        apply_unary(
            x,
            Unary {
                in_place: simd::sigmoid_in_place,
                slice: simd::sigmoid_slice,
            },
        )
    }

    fn fused_tanh(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_tanh(x);
        }
        apply_unary(
            x,
            Unary {
                in_place: simd::tanh_in_place,
                slice: simd::tanh_slice,
            },
        )
    }

    fn fused_softplus(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return composed_softplus::<Flex>(x);
        }
        apply_unary(
            x,
            Unary {
                in_place: simd::softplus_in_place,
                slice: simd::softplus_slice,
            },
        )
    }

    fn fused_gru_gate(parts: FlexTensor, h: FlexTensor, update_shift: f32) -> FlexTensor {
        if !all_f32(&[&parts, &h]) {
            return composed_gru_gate_keeping_gates::<Flex>(parts, h, update_shift).0;
        }
        let width = gru_width(&parts, &h);
        let (parts, h) = (dense(parts), dense(h));
        let mut output = vec![0.0f32; dense_values(&h).len()];
        simd::gru_gate(
            dense_values(&parts),
            dense_values(&h),
            update_shift,
            width,
            &mut output,
            &mut [],
        );
        from_values(output, &h)
    }
}

/// The state width `D` of a GRU gate's `[B, 3 D]` pre-activations and `[B, D]` state.
fn gru_width(parts: &FlexTensor, h: &FlexTensor) -> usize {
    let (ps, hs) = (parts.shape(), h.shape());
    assert!(
        ps.num_dims() == 2 && hs.num_dims() == 2 && ps[0] == hs[0] && ps[1] == 3 * hs[1],
        "gru_gate: pre-activations {ps:?} and state {hs:?} do not fit: expected [B, 3 D] and [B, D]"
    );
    hs[1]
}

impl ActivationKernels for Flex {
    fn silu_keeping_sigmoid(x: FlexTensor) -> (FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 {
            return composed_silu_keeping_sigmoid::<Flex>(x);
        }
        let x = dense(x);
        let input = dense_values(&x);
        let mut output = vec![0.0f32; input.len()];
        let mut sigmoid = vec![0.0f32; input.len()];
        simd::silu_keeping_sigmoid(input, &mut output, &mut sigmoid);
        (from_values(output, &x), from_values(sigmoid, &x))
    }

    fn silu_backward(x: FlexTensor, sigmoid: FlexTensor, grad: FlexTensor) -> FlexTensor {
        assert_same_shape("silu_backward", &x, &sigmoid);
        assert_same_shape("silu_backward", &x, &grad);
        if !all_f32(&[&x, &sigmoid, &grad]) {
            return composed_silu_backward::<Flex>(x, sigmoid, grad);
        }
        let (x, sigmoid) = (dense(x), dense(sigmoid));
        let mut grad = dense(grad);
        if let Some(values) = unique_values(&mut grad) {
            simd::silu_backward_in_place(dense_values(&x), dense_values(&sigmoid), values);
            return grad;
        }
        let mut output = dense_values(&grad).to_vec();
        simd::silu_backward_in_place(dense_values(&x), dense_values(&sigmoid), &mut output);
        from_values(output, &grad)
    }

    fn fused_sigmoid_backward(output: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if !all_f32(&[&output, &grad]) {
            return <Flex as burn::backend::ops::ActivationOps<Flex>>::sigmoid_backward(
                output, grad,
            );
        }
        apply_backward(output, grad, simd::sigmoid_backward_in_place)
    }

    fn tanh_backward(output: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if !all_f32(&[&output, &grad]) {
            return composed_tanh_backward::<Flex>(output, grad);
        }
        apply_backward(output, grad, simd::tanh_backward_in_place)
    }

    fn softplus_keeping_sigmoid(x: FlexTensor) -> (FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 {
            return composed_softplus_keeping_sigmoid::<Flex>(x);
        }
        let x = dense(x);
        let input = dense_values(&x);
        let mut output = vec![0.0f32; input.len()];
        let mut sigmoid = vec![0.0f32; input.len()];
        simd::softplus_keeping_sigmoid(input, &mut output, &mut sigmoid);
        (from_values(output, &x), from_values(sigmoid, &x))
    }

    fn softplus_backward(sigmoid: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if !all_f32(&[&sigmoid, &grad]) {
            return <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_mul(grad, sigmoid);
        }
        apply_backward(sigmoid, grad, simd::mul_in_place)
    }

    fn gru_gate_keeping_gates(
        parts: FlexTensor,
        h: FlexTensor,
        update_shift: f32,
    ) -> (FlexTensor, FlexTensor) {
        if !all_f32(&[&parts, &h]) {
            return composed_gru_gate_keeping_gates::<Flex>(parts, h, update_shift);
        }
        let width = gru_width(&parts, &h);
        let (parts, h) = (dense(parts), dense(h));
        let mut output = vec![0.0f32; dense_values(&h).len()];
        let mut gates = vec![0.0f32; dense_values(&parts).len()];
        simd::gru_gate(
            dense_values(&parts),
            dense_values(&h),
            update_shift,
            width,
            &mut output,
            &mut gates,
        );
        (from_values(output, &h), from_values(gates, &parts))
    }

    fn gru_gate_backward(
        parts: FlexTensor,
        h: FlexTensor,
        gates: FlexTensor,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        let width = gru_width(&parts, &h);
        assert_same_shape("gru_gate_backward", &parts, &gates);
        assert_same_shape("gru_gate_backward", &h, &grad);
        if !all_f32(&[&parts, &h, &gates, &grad]) {
            return composed_gru_gate_backward::<Flex>(parts, h, gates, grad);
        }
        let (parts, h) = (dense(parts), dense(h));
        let mut gates = unique_dense(gates);
        let mut grad = unique_dense(grad);
        simd::gru_gate_backward(
            dense_values(&parts),
            dense_values(&h),
            width,
            unique_values(&mut gates).expect("a fresh dense buffer is unique"),
            unique_values(&mut grad).expect("a fresh dense buffer is unique"),
        );
        (gates, grad)
    }
}

/// The tensor itself when its elements are one dense block of its buffer (in logical order),
/// else a dense copy.
fn dense(tensor: FlexTensor) -> FlexTensor {
    if tensor.layout().contiguous_offsets().is_some() {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

/// A dense `f32` tensor whose buffer no other tensor shares: the tensor itself when it is
/// already, else a copy.
fn unique_dense(tensor: FlexTensor) -> FlexTensor {
    let mut tensor = dense(tensor);
    if unique_values(&mut tensor).is_some() {
        return tensor;
    }
    let values = dense_values(&tensor).to_vec();
    from_values(values, &tensor)
}

/// The elements of a tensor returned by [`dense`], in logical order.
fn dense_values(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("a dense f32 tensor should have a contiguous f32 slice")
}

/// The elements of a [`dense`] tensor, writable, when no other tensor shares its buffer.
fn unique_values(tensor: &mut FlexTensor) -> Option<&mut [f32]> {
    let (start, end) = tensor.layout().contiguous_offsets()?;
    let storage = tensor.try_storage_mut::<f32>()?;
    Some(&mut storage[start..end])
}

/// A dense `f32` tensor of `like`'s shape holding `values`.
fn from_values(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(like.shape()),
        DType::F32,
    )
}

/// A dense `f32` flex tensor of `shape` holding `values` (for the tests).
#[cfg(test)]
pub(crate) fn test_tensor(values: &[f32], shape: [usize; 2]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values.to_vec()),
        Layout::contiguous(burn::tensor::Shape::new(shape)),
        DType::F32,
    )
}

/// The elements of an `f32` flex tensor in logical order (for the tests).
#[cfg(test)]
pub(crate) fn test_values(tensor: FlexTensor) -> Vec<f32> {
    dense_values(&dense(tensor)).to_vec()
}
