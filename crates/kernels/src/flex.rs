//! The flex implementations: the [`simd`](crate::simd) kernels over the tensors' `f32` buffers.
//!
//! Other dtypes (`f64`, half precision) take the composed path. Inputs that are not one dense
//! block (transposed or strided views) are copied to a dense buffer first. A buffer that no
//! other tensor shares is overwritten in place, as flex's own element-wise operations do.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{Bytes, DType, Flex, TensorMetadata};

use crate::{
    FusedActivationOps, SiluKernels, composed_silu_backward, composed_silu_keeping_sigmoid, simd,
};

impl FusedActivationOps for Flex {
    fn fused_silu(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return composed_silu_keeping_sigmoid::<Flex>(x).0;
        }
        let mut x = dense(x);
        if let Some(values) = unique_values(&mut x) {
            simd::silu_in_place(values);
            return x;
        }
        let input = dense_values(&x);
        let mut output = vec![0.0f32; input.len()];
        simd::silu_slice(input, &mut output);
        from_values(output, &x)
    }
}

impl SiluKernels for Flex {
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
        assert!(
            x.shape() == sigmoid.shape() && x.shape() == grad.shape(),
            "silu_backward: shapes differ: input {:?}, sigmoid {:?}, gradient {:?}",
            x.shape(),
            sigmoid.shape(),
            grad.shape()
        );
        if [x.dtype(), sigmoid.dtype(), grad.dtype()] != [DType::F32; 3] {
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
