//! Fused tensor operations for the models, each with its own backward pass.
//!
//! burn composes its activations from primitive operations: on the autodiff backend a SiLU runs
//! `exp` twice per element (the sigmoid's backward pass recomputes the sigmoid from its input)
//! and four element-wise loops, and a GRU cell's gates are three slices, three activations and
//! five products, each its own graph node with its own buffers. Here each is one operation:
//!
//! - [`silu`] (`x * sigmoid(x)`), [`sigmoid`], [`tanh`], [`softplus`] and [`gru_gate`] (the
//!   gates and state update of DreamerV3's GRU cell);
//! - on burn's `flex` CPU backend, a backend extension ([`FusedActivationOps`], declared with
//!   burn's `#[backend_extension]`) whose forward pass is one loop with a vectorised `exp`
//!   ([`simd`]) that keeps what the backward pass needs (the sigmoid, the output, the gates), and
//!   whose backward pass is one loop without any `exp`;
//! - on every other backend (libtorch, GPUs), the composed version from burn's tensor
//!   operations ([`silu_composed`] and the like), unchanged.
//!
//! Model code calls these on any device and stays backend-agnostic: the device picks the path
//! at run time, as burn 0.22 picks the backend.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! let device = Device::flex().autodiff();
//! let x = Tensor::<1>::from_floats([-1.0, 0.0, 2.0], &device).require_grad();
//! let y = wm_kernels::silu(x.clone());
//! let grads = y.sum().backward();
//! let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
//! // d/dx [x sigmoid(x)] at 0 is 1/2.
//! assert!((dx[1] - 0.5).abs() < 1e-6);
//! ```

mod autodiff;
mod flex;
pub mod simd;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Slice, TensorMetadata, backend_extension};
use burn::tensor::{Device, Tensor};

/// SiLU (swish), `x * sigmoid(x)`, element-wise, as one fused operation with its own backward
/// pass on flex (with or without autodiff), and burn's composed SiLU on other devices.
///
/// Agrees with [`silu_composed`] to a few `f32` ulps (the `exp` differs from the standard
/// library's by at most 2 ulp); NaN inputs give NaN outputs and gradients.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FusedActivationOps>::fused_silu(
            x.into_dispatch(),
        ))
    } else {
        silu_composed(x)
    }
}

/// burn's composed SiLU, `x * sigmoid(x)` from standard tensor operations: the path of every
/// device other than flex, and the reference the fused path is tested and benchmarked against.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn silu_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(x)
}

/// The logistic sigmoid `1 / (1 + exp(-x))`, element-wise: one fused operation on flex whose
/// backward pass `dy * s * (1 - s)` uses the kept output (no `exp`); burn's sigmoid elsewhere.
///
/// Agrees with [`sigmoid_composed`] to a few `f32` ulps; NaN gives NaN.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FusedActivationOps>::fused_sigmoid(
            x.into_dispatch(),
        ))
    } else {
        sigmoid_composed(x)
    }
}

/// burn's sigmoid: the path of devices other than flex and the fused op's reference.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn sigmoid_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::sigmoid(x)
}

/// `tanh(x)`, element-wise: one fused operation on flex (a vectorised Cephes `tanhf`) whose
/// backward pass `dy * (1 - t^2)` uses the kept output; burn's `tanh` elsewhere.
///
/// Agrees with [`tanh_composed`] to a few `f32` ulps; NaN gives NaN.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FusedActivationOps>::fused_tanh(
            x.into_dispatch(),
        ))
    } else {
        tanh_composed(x)
    }
}

/// burn's `tanh`: the path of devices other than flex and the fused op's reference.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn tanh_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::tanh(x)
}

/// `softplus(x) = ln(1 + e^x)`, element-wise and stable for any `x`: one fused operation on flex
/// (one `exp` and one `ln` per element, computed as `max(x, 0) + ln(1 + e^{-|x|})`) that keeps
/// its derivative `sigmoid(x)` for the backward pass `dy * sigmoid(x)`; [`softplus_composed`]
/// elsewhere.
///
/// Agrees with [`softplus_composed`] to a few `f32` ulps; NaN gives NaN.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FusedActivationOps>::fused_softplus(
            x.into_dispatch(),
        ))
    } else {
        softplus_composed(x)
    }
}

/// `softplus(x)` from standard operations, stable for any `x`, in two autodiff operations:
/// `-log_sigmoid(-x)` (burn's own `softplus` takes seven). The path of devices other than flex
/// and the fused op's reference.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn softplus_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::log_sigmoid(x.neg()).neg()
}

/// The gates and state update of DreamerV3's GRU cell, as one operation: with `parts` the fused
/// gate pre-activations `[p_r | p_c | p_u]` of each row and `h` the previous state,
/// `r = sigmoid(p_r)`, `t = tanh(r * p_c)`, `u = sigmoid(p_u - update_shift)` and
/// `h' = h + u * (t - h)`.
///
/// On flex it is one forward loop (keeping `[r | t | u]`) and one backward loop that gives the
/// gradients of `parts` and `h` together; elsewhere [`gru_gate_composed`]. Agrees with
/// [`gru_gate_composed`] to a few `f32` ulps.
///
/// # Shapes
/// - `parts`: `[B, 3 D]`, `h`: `[B, D]`; returns `[B, D]`.
///
/// # Panics
/// If the shapes do not fit (a programming error in the model; the message gives both shapes).
pub fn gru_gate(parts: Tensor<2>, h: Tensor<2>, update_shift: f32) -> Tensor<2> {
    check_gru_shapes(&parts, &h);
    if runs_on_flex(&parts.device()) {
        Tensor::from_dispatch(<Dispatch as FusedActivationOps>::fused_gru_gate(
            parts.into_dispatch(),
            h.into_dispatch(),
            update_shift,
        ))
    } else {
        gru_gate_composed(parts, h, update_shift)
    }
}

/// [`gru_gate`] from standard tensor operations (three slices, three activations, the update):
/// the path of devices other than flex and the fused op's reference.
///
/// # Shapes
/// - `parts`: `[B, 3 D]`, `h`: `[B, D]`; returns `[B, D]`.
///
/// # Panics
/// If the shapes do not fit.
pub fn gru_gate_composed(parts: Tensor<2>, h: Tensor<2>, update_shift: f32) -> Tensor<2> {
    check_gru_shapes(&parts, &h);
    let d = h.dims()[1];
    let reset = sigmoid_composed(parts.clone().narrow(1, 0, d));
    let cand = tanh_composed(reset * parts.clone().narrow(1, d, d));
    let update = sigmoid_composed(parts.narrow(1, 2 * d, d).sub_scalar(update_shift));
    h.clone() + update * (cand - h)
}

fn check_gru_shapes(parts: &Tensor<2>, h: &Tensor<2>) {
    let ([b, w], [hb, d]) = (parts.dims(), h.dims());
    assert!(
        b == hb && w == 3 * d,
        "gru_gate: pre-activations {:?} and state {:?} do not fit: expected [B, 3 D] and [B, D]",
        [b, w],
        [hb, d]
    );
}

/// Whether `device` is flex, with or without autodiff: the devices [`FusedActivationOps`] is
/// implemented for.
pub fn runs_on_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// Fused activations as a burn backend extension: implemented for flex (vectorised kernels) and
/// for autodiff over any backend that has [`ActivationKernels`] (one backward step each).
/// Calling it on another backend panics, which is why models call [`silu`], [`sigmoid`],
/// [`tanh`], [`softplus`] and [`gru_gate`], which never do.
#[backend_extension(Flex, Autodiff)]
pub trait FusedActivationOps: Backend {
    /// SiLU, `x * sigmoid(x)`, element-wise.
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The logistic sigmoid, element-wise.
    fn fused_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `tanh`, element-wise.
    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `softplus`, `ln(1 + e^x)`, element-wise.
    fn fused_softplus(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The GRU gate of [`gru_gate`]: `parts` `[B, 3 D]`, `h` `[B, D]`, returns `[B, D]`.
    fn fused_gru_gate(
        parts: FloatTensor<Self>,
        h: FloatTensor<Self>,
        update_shift: f32,
    ) -> FloatTensor<Self>;
}

/// The halves of the fused operations that the autodiff backward steps need from the inner
/// backend: each forward pass keeps what its backward pass reads. The default bodies compose
/// standard operations (the path of `f64` and of backends without kernels); flex overrides them
/// with single-pass kernels.
pub trait ActivationKernels: Backend {
    /// SiLU that also returns the sigmoid it computed, for the backward pass: `(x * s, s)` with
    /// `s = sigmoid(x)`.
    fn silu_keeping_sigmoid(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_silu_keeping_sigmoid::<Self>(x)
    }

    /// SiLU's backward pass: `grad * s * (1 + x * (1 - s))`, given the input `x` and
    /// `s = sigmoid(x)` (all three of one shape).
    fn silu_backward(
        x: FloatTensor<Self>,
        sigmoid: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed_silu_backward::<Self>(x, sigmoid, grad)
    }

    /// The sigmoid's backward pass from its output `s`: `grad * s * (1 - s)`.
    fn fused_sigmoid_backward(
        output: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::sigmoid_backward(output, grad)
    }

    /// `tanh`'s backward pass from its output `t`: `grad * (1 - t^2)`.
    fn tanh_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_tanh_backward::<Self>(output, grad)
    }

    /// `softplus` that also returns its derivative, `(softplus(x), sigmoid(x))`.
    fn softplus_keeping_sigmoid(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_softplus_keeping_sigmoid::<Self>(x)
    }

    /// `softplus`'s backward pass from the kept sigmoid: `grad * sigmoid`.
    fn softplus_backward(sigmoid: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_mul(grad, sigmoid)
    }

    /// The GRU gate that also returns `[r | t | u]` (`[B, 3 D]`) for the backward pass.
    fn gru_gate_keeping_gates(
        parts: FloatTensor<Self>,
        h: FloatTensor<Self>,
        update_shift: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_gru_gate_keeping_gates::<Self>(parts, h, update_shift)
    }

    /// The GRU gate's backward pass: the gradients of `parts` (`[B, 3 D]`) and `h` (`[B, D]`)
    /// from the forward pass's inputs, its kept `[r | t | u]` and the output gradient.
    fn gru_gate_backward(
        parts: FloatTensor<Self>,
        h: FloatTensor<Self>,
        gates: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_gru_gate_backward::<Self>(parts, h, gates, grad)
    }
}

/// [`ActivationKernels::silu_keeping_sigmoid`] from standard operations.
fn composed_silu_keeping_sigmoid<B: Backend>(
    x: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let sigmoid = B::sigmoid(x.clone());
    (B::float_mul(x, sigmoid.clone()), sigmoid)
}

/// [`ActivationKernels::silu_backward`] from standard operations.
fn composed_silu_backward<B: Backend>(
    x: FloatTensor<B>,
    sigmoid: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    // s * (1 + x * (1 - s))
    let one_minus_s = one_minus::<B>(sigmoid.clone());
    let inner = B::float_add_scalar(B::float_mul(x, one_minus_s), 1.0.into());
    B::float_mul(grad, B::float_mul(sigmoid, inner))
}

/// `1 - x`.
fn one_minus<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_add_scalar(B::float_neg(x), 1.0.into())
}

/// [`ActivationKernels::tanh_backward`] from standard operations.
fn composed_tanh_backward<B: Backend>(
    output: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let square = B::float_mul(output.clone(), output);
    B::float_mul(grad, one_minus::<B>(square))
}

/// `softplus` from standard operations, `-log_sigmoid(-x)`, as [`softplus_composed`].
fn composed_softplus<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_neg(B::log_sigmoid(B::float_neg(x)))
}

/// [`ActivationKernels::softplus_keeping_sigmoid`] from standard operations.
fn composed_softplus_keeping_sigmoid<B: Backend>(
    x: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    (composed_softplus::<B>(x.clone()), B::sigmoid(x))
}

/// Columns `[start, start + width)` of a `[B, W]` tensor.
fn columns<B: Backend>(x: FloatTensor<B>, start: usize, width: usize) -> FloatTensor<B> {
    let rows = x.shape()[0];
    B::float_slice(
        x,
        &[Slice::from(0..rows), Slice::from(start..start + width)],
    )
}

/// The GRU gate from standard operations: `(h', [r | t | u])`.
fn composed_gru_gate_keeping_gates<B: Backend>(
    parts: FloatTensor<B>,
    h: FloatTensor<B>,
    update_shift: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let d = h.shape()[1];
    let reset = B::sigmoid(columns::<B>(parts.clone(), 0, d));
    let cand = B::float_tanh(B::float_mul(
        reset.clone(),
        columns::<B>(parts.clone(), d, d),
    ));
    let update = B::sigmoid(B::float_sub_scalar(
        columns::<B>(parts, 2 * d, d),
        update_shift.into(),
    ));
    let delta = B::float_mul(update.clone(), B::float_sub(cand.clone(), h.clone()));
    let output = B::float_add(h, delta);
    (output, B::float_cat(vec![reset, cand, update], 1))
}

/// [`ActivationKernels::gru_gate_backward`] from standard operations.
fn composed_gru_gate_backward<B: Backend>(
    parts: FloatTensor<B>,
    h: FloatTensor<B>,
    gates: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let d = h.shape()[1];
    let reset = columns::<B>(gates.clone(), 0, d);
    let cand = columns::<B>(gates.clone(), d, d);
    let update = columns::<B>(gates, 2 * d, d);
    let mul = B::float_mul;
    // dq = g u (1 - t^2), the gradient of the tanh's argument q = r p_c.
    let dq = mul(
        mul(grad.clone(), update.clone()),
        one_minus::<B>(mul(cand.clone(), cand.clone())),
    );
    let reset_slope = mul(reset.clone(), one_minus::<B>(reset.clone()));
    let d_reset = mul(mul(dq.clone(), columns::<B>(parts, d, d)), reset_slope);
    let d_cand = mul(dq, reset);
    let update_slope = mul(update.clone(), one_minus::<B>(update.clone()));
    let d_update = mul(mul(grad.clone(), B::float_sub(cand, h)), update_slope);
    let d_h = mul(grad, one_minus::<B>(update));
    (B::float_cat(vec![d_reset, d_cand, d_update], 1), d_h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{FloatDType, Tensor, TensorData};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random inputs over several scales, with zero, both signs of 80 (where the sigmoid
    /// saturates) and values near the saturation edges.
    fn test_inputs(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut values = vec![
            0.0, -0.0, 80.0, -80.0, 20.0, -20.0, 1e-6, -1e-6, 16.0, -16.0,
        ];
        while values.len() < n {
            let scale = [0.1, 1.0, 5.0, 30.0, 90.0][values.len() % 5];
            values.push(rng.random_range(-1.0f32..1.0) * scale);
        }
        values.truncate(n);
        values
    }

    /// Upstream gradients: random, away from zero, of both signs.
    fn test_weights(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let magnitude = rng.random_range(0.5f32..2.0);
                if i % 3 == 0 { -magnitude } else { magnitude }
            })
            .collect()
    }

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    /// Max over elements of |a - b| / max(1, |b|): absolute near zero, relative for large values.
    fn max_mixed_error(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0, f32::max)
    }

    /// Output and input gradient of `sum(weights * f(x))`.
    fn value_and_grad(
        f: fn(Tensor<2>) -> Tensor<2>,
        x: &[f32],
        weights: &[f32],
        shape: [usize; 2],
        device: &Device,
    ) -> (Vec<f32>, Vec<f32>) {
        let x = Tensor::<2>::from_data(TensorData::new(x.to_vec(), shape), device).require_grad();
        let w = Tensor::<2>::from_data(TensorData::new(weights.to_vec(), shape), device);
        let y = f(x.clone());
        let grads = (y.clone() * w).sum().backward();
        let dx = x.grad(&grads).expect("x requires grad");
        (to_vec(y), to_vec(dx))
    }

    #[test]
    fn fused_silu_matches_composed_silu_and_its_gradient_on_flex() {
        // 37 x 19: not a multiple of the vector width, so the kernels' tails run too.
        let shape = [37, 19];
        let x = test_inputs(37 * 19, 1);
        let weights = test_weights(37 * 19, 2);
        let device = Device::flex().autodiff();
        let (y_fused, dx_fused) = value_and_grad(silu, &x, &weights, shape, &device);
        let (y_composed, dx_composed) = value_and_grad(silu_composed, &x, &weights, shape, &device);
        let y_error = max_mixed_error(&y_fused, &y_composed);
        let dx_error = max_mixed_error(&dx_fused, &dx_composed);
        assert!(y_error < 1e-5, "forward differs by {y_error}");
        assert!(dx_error < 1e-5, "gradient differs by {dx_error}");
        // Saturated ends: silu(80) = 80 with slope 1, silu(-80) ~ 0 with slope ~ 0.
        assert_eq!((y_fused[2], dx_fused[2] / weights[2]), (80.0, 1.0));
        assert!(y_fused[3].abs() < 1e-30 && dx_fused[3].abs() < 1e-30);
        // At zero: value 0, slope 1/2.
        assert_eq!((y_fused[0], dx_fused[0] / weights[0]), (0.0, 0.5));
    }

    #[test]
    fn fused_silu_gradient_matches_central_differences() {
        let device = Device::flex().autodiff();
        let x: Vec<f32> = test_inputs(512, 3)
            .iter()
            .map(|v| v.clamp(-8.0, 8.0))
            .collect();
        let weights = test_weights(512, 4);
        let (_, dx) = value_and_grad(silu, &x, &weights, [16, 32], &device);
        // The loss is a weighted sum of element-wise terms, so its central difference in x_i is
        // w_i (silu(x_i + h) - silu(x_i - h)) / 2h, evaluated with the fused forward pass.
        let h = 1e-2f32;
        let plain = Device::flex();
        let forward = |shift: f32| -> Vec<f32> {
            let shifted: Vec<f32> = x.iter().map(|v| v + shift).collect();
            to_vec(silu(Tensor::<1>::from_floats(shifted.as_slice(), &plain)))
        };
        let (up, down) = (forward(h), forward(-h));
        for i in 0..x.len() {
            let numeric = weights[i] * (up[i] - down[i]) / (2.0 * h);
            let error = (dx[i] - numeric).abs();
            assert!(
                error < 2e-3 * weights[i].abs(),
                "x = {}: gradient {} against central difference {numeric}",
                x[i],
                dx[i]
            );
        }
    }

    #[test]
    fn fused_silu_without_autodiff_matches_composed_and_leaves_a_shared_input_unchanged() {
        let device = Device::flex();
        let values = test_inputs(1000, 5);
        let x = Tensor::<1>::from_floats(values.as_slice(), &device);
        // `x` is still held here, so the fused op must not overwrite its buffer.
        let fused = to_vec(silu(x.clone()));
        assert_eq!(to_vec(x.clone()), values);
        let composed = to_vec(silu_composed(x.clone()));
        assert!(max_mixed_error(&fused, &composed) < 1e-5);
        // A uniquely held input may be overwritten in place: same values.
        let in_place = to_vec(silu(x));
        assert_eq!(in_place, fused);
    }

    #[test]
    fn fused_silu_of_a_transposed_view_matches_composed() {
        let device = Device::flex().autodiff();
        let values = test_inputs(6 * 10, 6);
        let x = Tensor::<2>::from_data(TensorData::new(values, [6, 10]), &device).require_grad();
        let upstream =
            Tensor::<2>::from_data(TensorData::new(test_weights(60, 7), [10, 6]), &device);
        let grad_of = |f: fn(Tensor<2>) -> Tensor<2>| {
            let y = f(x.clone().transpose());
            let grads = (y.clone() * upstream.clone()).sum().backward();
            (to_vec(y), to_vec(x.grad(&grads).expect("x requires grad")))
        };
        let (y_fused, dx_fused) = grad_of(silu);
        let (y_composed, dx_composed) = grad_of(silu_composed);
        assert!(max_mixed_error(&y_fused, &y_composed) < 1e-5);
        assert!(max_mixed_error(&dx_fused, &dx_composed) < 1e-5);
    }

    #[test]
    fn fused_silu_propagates_nan_to_the_output_and_the_gradient() {
        let device = Device::flex().autodiff();
        let x = Tensor::<1>::from_floats([f32::NAN, 1.0], &device).require_grad();
        let y = silu(x.clone());
        let grads = y.clone().sum().backward();
        let (y, dx) = (to_vec(y), to_vec(x.grad(&grads).expect("x requires grad")));
        assert!(y[0].is_nan() && dx[0].is_nan(), "{y:?} {dx:?}");
        assert!(y[1].is_finite() && dx[1].is_finite(), "{y:?} {dx:?}");
    }

    #[test]
    fn fused_silu_on_f64_falls_back_to_the_composed_kernels() {
        let device = Device::flex().autodiff();
        let values = [-3.0f64, -0.5, 0.0, 0.5, 3.0];
        let x = Tensor::<1>::from_data(TensorData::from(values), &device)
            .cast(FloatDType::F64)
            .require_grad();
        let y = silu(x.clone());
        let grads = y.clone().sum().backward();
        let y: Vec<f64> = y.into_data().try_to_vec().expect("f64 data");
        let dx: Vec<f64> = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec()
            .expect("f64 data");
        for (i, v) in values.iter().enumerate() {
            let s = 1.0 / (1.0 + (-v).exp());
            assert!((y[i] - v * s).abs() < 1e-12, "{} != {}", y[i], v * s);
            assert!((dx[i] - s * (1.0 + v * (1.0 - s))).abs() < 1e-12);
        }
    }

    #[test]
    fn silu_on_the_test_device_matches_the_analytic_values() {
        // flex by default; `WM_TEST_DEVICE=tch-cpu` (with `--features tch`) runs the composed
        // path of the other backends.
        let device = wm_backend::test_device().autodiff();
        let values = [-4.0f32, -1.0, 0.0, 0.5, 2.0, 80.0];
        let x = Tensor::<1>::from_floats(values, &device).require_grad();
        let y = silu(x.clone());
        let grads = y.clone().sum().backward();
        let (y, dx) = (to_vec(y), to_vec(x.grad(&grads).expect("x requires grad")));
        for (i, &v) in values.iter().enumerate() {
            let v = f64::from(v);
            let s = 1.0 / (1.0 + (-v).exp());
            let (value, slope) = (v * s, s * (1.0 + v * (1.0 - s)));
            assert!((f64::from(y[i]) - value).abs() < 1e-5 * value.abs().max(1.0));
            assert!(
                (f64::from(dx[i]) - slope).abs() < 1e-5,
                "{} != {slope}",
                dx[i]
            );
        }
    }

    #[test]
    fn runs_on_flex_sees_through_autodiff() {
        assert!(runs_on_flex(&Device::flex()));
        assert!(runs_on_flex(&Device::flex().autodiff()));
    }

    type Unary2 = fn(Tensor<2>) -> Tensor<2>;

    /// The fused unary operations beside their composed references, with a name for messages.
    const UNARY: [(&str, Unary2, Unary2); 3] = [
        ("sigmoid", sigmoid, sigmoid_composed),
        ("tanh", tanh, tanh_composed),
        ("softplus", softplus, softplus_composed),
    ];

    #[test]
    fn fused_sigmoid_tanh_and_softplus_match_composed_values_and_gradients_on_flex() {
        let shape = [37, 19];
        let x = test_inputs(37 * 19, 11);
        let weights = test_weights(37 * 19, 12);
        let device = Device::flex().autodiff();
        for (name, fused, composed) in UNARY {
            let (y_fused, dx_fused) = value_and_grad(fused, &x, &weights, shape, &device);
            let (y_composed, dx_composed) = value_and_grad(composed, &x, &weights, shape, &device);
            let y_error = max_mixed_error(&y_fused, &y_composed);
            let dx_error = max_mixed_error(&dx_fused, &dx_composed);
            assert!(y_error < 1e-5, "{name}: forward differs by {y_error}");
            assert!(dx_error < 1e-5, "{name}: gradient differs by {dx_error}");
        }
        // Saturated ends (x = 80 and -80 are the inputs 2 and 3).
        let (y, dx) = value_and_grad(sigmoid, &x, &weights, shape, &device);
        assert_eq!((y[2], dx[2]), (1.0, 0.0));
        // sigmoid(-80) = e^-80 ~ 1.8e-35, still a normal float.
        assert!(
            y[3] > 0.0 && y[3] < 1e-34 && dx[3].abs() < 1e-34,
            "{} {}",
            y[3],
            dx[3]
        );
        let (y, dx) = value_and_grad(tanh, &x, &weights, shape, &device);
        assert_eq!((y[2], y[3], dx[2], dx[3]), (1.0, -1.0, 0.0, 0.0));
        let (y, dx) = value_and_grad(softplus, &x, &weights, shape, &device);
        assert_eq!((y[2], dx[2] / weights[2]), (80.0, 1.0));
        assert!(
            y[3] > 0.0 && y[3] < 1e-34 && dx[3].abs() < 1e-34,
            "{} {}",
            y[3],
            dx[3]
        );
    }

    #[test]
    fn fused_sigmoid_tanh_and_softplus_gradients_match_central_differences() {
        let device = Device::flex().autodiff();
        let plain = Device::flex();
        let x: Vec<f32> = test_inputs(512, 13)
            .iter()
            .map(|v| v.clamp(-8.0, 8.0))
            .collect();
        let weights = test_weights(512, 14);
        let h = 1e-2f32;
        for (name, fused, _) in UNARY {
            let (_, dx) = value_and_grad(fused, &x, &weights, [16, 32], &device);
            let forward = |shift: f32| -> Vec<f32> {
                let shifted: Vec<f32> = x.iter().map(|v| v + shift).collect();
                to_vec(fused(Tensor::<2>::from_data(
                    TensorData::new(shifted, [16, 32]),
                    &plain,
                )))
            };
            let (up, down) = (forward(h), forward(-h));
            for i in 0..x.len() {
                let numeric = weights[i] * (up[i] - down[i]) / (2.0 * h);
                assert!(
                    (dx[i] - numeric).abs() < 2e-3 * weights[i].abs(),
                    "{name} at x = {}: gradient {} against central difference {numeric}",
                    x[i],
                    dx[i]
                );
            }
        }
    }

    #[test]
    fn fused_unary_ops_without_autodiff_match_composed_and_leave_a_shared_input_unchanged() {
        let device = Device::flex();
        let values = test_inputs(1000, 15);
        for (name, fused, composed) in UNARY {
            let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [10, 100]), &device);
            let y = to_vec(fused(x.clone()));
            assert_eq!(to_vec(x.clone()), values, "{name} overwrote a shared input");
            let reference = to_vec(composed(x.clone()));
            assert!(max_mixed_error(&y, &reference) < 1e-5, "{name}");
            assert_eq!(to_vec(fused(x)), y, "{name}: in place differs");
            // A transposed view goes through the dense copy.
            let t = Tensor::<2>::from_data(TensorData::new(values.clone(), [10, 100]), &device)
                .transpose();
            let reference = to_vec(composed(t.clone()));
            assert!(
                max_mixed_error(&to_vec(fused(t)), &reference) < 1e-5,
                "{name}"
            );
        }
    }

    #[test]
    fn fused_unary_ops_propagate_nan_and_fall_back_on_f64() {
        let device = Device::flex().autodiff();
        for (name, fused, composed) in UNARY {
            let x = Tensor::<2>::from_floats([[f32::NAN, 1.0]], &device).require_grad();
            let y = fused(x.clone());
            let grads = y.clone().sum().backward();
            let (y, dx) = (to_vec(y), to_vec(x.grad(&grads).expect("x requires grad")));
            assert!(y[0].is_nan() && dx[0].is_nan(), "{name}: {y:?} {dx:?}");
            assert!(
                y[1].is_finite() && dx[1].is_finite(),
                "{name}: {y:?} {dx:?}"
            );

            let values = [[-3.0f64, -0.5, 0.0, 0.5, 3.0]];
            let run = |f: Unary2| {
                let x = Tensor::<2>::from_data(TensorData::from(values), &device)
                    .cast(FloatDType::F64)
                    .require_grad();
                let y = f(x.clone());
                let grads = (y.clone() * y.clone()).sum().backward();
                let y: Vec<f64> = y.into_data().try_to_vec().expect("f64 data");
                let dx: Vec<f64> = x
                    .grad(&grads)
                    .unwrap()
                    .into_data()
                    .try_to_vec()
                    .expect("f64 data");
                (y, dx)
            };
            let ((y, dx), (y_ref, dx_ref)) = (run(fused), run(composed));
            for i in 0..5 {
                assert!(
                    (y[i] - y_ref[i]).abs() < 1e-12,
                    "{name} f64: {y:?} {y_ref:?}"
                );
                assert!(
                    (dx[i] - dx_ref[i]).abs() < 1e-12,
                    "{name} f64: {dx:?} {dx_ref:?}"
                );
            }
        }
    }

    /// GRU gate inputs: pre-activations `[b, 3 d]` over several scales with saturating values
    /// (±80, ±20) and zeros, a state in (-1, 1), and upstream weights.
    fn gru_inputs(b: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let parts = test_inputs(3 * b * d, seed)
            .iter()
            .map(|v| v * 0.2)
            .collect::<Vec<_>>();
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
        let h = (0..b * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        (parts, h, test_weights(b * d, seed + 2))
    }

    /// Output and the gradients of both inputs of `sum(weights * gate(parts, h, shift))`.
    fn gru_value_and_grads(
        gate: fn(Tensor<2>, Tensor<2>, f32) -> Tensor<2>,
        (parts, h, weights): &(Vec<f32>, Vec<f32>, Vec<f32>),
        [b, d]: [usize; 2],
        shift: f32,
        device: &Device,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let p = Tensor::<2>::from_data(TensorData::new(parts.clone(), [b, 3 * d]), device)
            .require_grad();
        let h = Tensor::<2>::from_data(TensorData::new(h.clone(), [b, d]), device).require_grad();
        let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [b, d]), device);
        let y = gate(p.clone(), h.clone(), shift);
        let grads = (y.clone() * w).sum().backward();
        (
            to_vec(y),
            to_vec(p.grad(&grads).expect("parts require grad")),
            to_vec(h.grad(&grads).expect("h requires grad")),
        )
    }

    #[test]
    fn fused_gru_gate_matches_the_composed_gate_and_its_gradients_on_flex() {
        let device = Device::flex().autodiff();
        // Width 37: not a multiple of the vector width, so the row tails run too.
        let dims = [6, 37];
        let inputs = gru_inputs(6, 37, 21);
        for shift in [0.0, 1.0] {
            let fused = gru_value_and_grads(gru_gate, &inputs, dims, shift, &device);
            let composed = gru_value_and_grads(gru_gate_composed, &inputs, dims, shift, &device);
            for (what, a, b) in [
                ("output", &fused.0, &composed.0),
                ("d parts", &fused.1, &composed.1),
                ("d h", &fused.2, &composed.2),
            ] {
                let error = max_mixed_error(a, b);
                assert!(error < 1e-5, "shift {shift}: {what} differs by {error}");
            }
        }
    }

    #[test]
    fn fused_gru_gate_gradients_match_central_differences() {
        let device = Device::flex().autodiff();
        let plain = Device::flex();
        let (b, d) = (4, 9);
        let (parts, h, weights) = gru_inputs(b, d, 31);
        let parts: Vec<f32> = parts.iter().map(|v| v.clamp(-4.0, 4.0)).collect();
        let inputs = (parts.clone(), h.clone(), weights.clone());
        let (_, d_parts, d_h) = gru_value_and_grads(gru_gate, &inputs, [b, d], 1.0, &device);
        // The loss sum(w * gate) evaluated in f64 from the fused forward pass's f32 outputs.
        let loss = |parts: &[f32], h: &[f32]| -> f64 {
            let p = Tensor::<2>::from_data(TensorData::new(parts.to_vec(), [b, 3 * d]), &plain);
            let h = Tensor::<2>::from_data(TensorData::new(h.to_vec(), [b, d]), &plain);
            to_vec(gru_gate(p, h, 1.0))
                .iter()
                .zip(&weights)
                .map(|(y, w)| f64::from(*y) * f64::from(*w))
                .sum()
        };
        let step = 1e-2f32;
        for i in 0..parts.len() {
            let (mut up, mut down) = (parts.clone(), parts.clone());
            up[i] += step;
            down[i] -= step;
            let numeric = (loss(&up, &h) - loss(&down, &h)) / (2.0 * f64::from(step));
            assert!(
                (f64::from(d_parts[i]) - numeric).abs() < 2e-3,
                "d parts[{i}] = {} against central difference {numeric}",
                d_parts[i]
            );
        }
        for i in 0..h.len() {
            let (mut up, mut down) = (h.clone(), h.clone());
            up[i] += step;
            down[i] -= step;
            let numeric = (loss(&parts, &up) - loss(&parts, &down)) / (2.0 * f64::from(step));
            assert!(
                (f64::from(d_h[i]) - numeric).abs() < 2e-3,
                "d h[{i}] = {} against central difference {numeric}",
                d_h[i]
            );
        }
    }

    #[test]
    fn fused_gru_gate_gives_the_gradient_of_whichever_input_is_tracked() {
        let device = Device::flex().autodiff();
        let (b, d) = (3, 5);
        let (parts, h, _) = gru_inputs(b, d, 41);
        let grads_of = |gate: fn(Tensor<2>, Tensor<2>, f32) -> Tensor<2>, track_parts: bool| {
            let p = Tensor::<2>::from_data(TensorData::new(parts.clone(), [b, 3 * d]), &device);
            let s = Tensor::<2>::from_data(TensorData::new(h.clone(), [b, d]), &device);
            let (p, s) = if track_parts {
                (p.require_grad(), s)
            } else {
                (p, s.require_grad())
            };
            let grads = gate(p.clone(), s.clone(), 0.0).sum().backward();
            let tracked = if track_parts { p } else { s };
            to_vec(tracked.grad(&grads).expect("tracked input has a gradient"))
        };
        for track_parts in [true, false] {
            let fused = grads_of(gru_gate, track_parts);
            let composed = grads_of(gru_gate_composed, track_parts);
            assert!(max_mixed_error(&fused, &composed) < 1e-5, "{track_parts}");
        }
        // Neither tracked: the plain forward pass on the autodiff device.
        let p = Tensor::<2>::from_data(TensorData::new(parts.clone(), [b, 3 * d]), &device);
        let s = Tensor::<2>::from_data(TensorData::new(h.clone(), [b, d]), &device);
        let (y, y_ref) = (
            to_vec(gru_gate(p.clone(), s.clone(), 0.0)),
            to_vec(gru_gate_composed(p, s, 0.0)),
        );
        assert!(max_mixed_error(&y, &y_ref) < 1e-5);
    }

    #[test]
    fn fused_gru_gate_on_f64_falls_back_to_the_composed_kernels() {
        let device = Device::flex().autodiff();
        let (b, d) = (2, 3);
        let (parts, h, weights) = gru_inputs(b, d, 51);
        let run = |gate: fn(Tensor<2>, Tensor<2>, f32) -> Tensor<2>| {
            let p = Tensor::<2>::from_data(TensorData::new(parts.clone(), [b, 3 * d]), &device)
                .cast(FloatDType::F64)
                .require_grad();
            let s = Tensor::<2>::from_data(TensorData::new(h.clone(), [b, d]), &device)
                .cast(FloatDType::F64)
                .require_grad();
            let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [b, d]), &device)
                .cast(FloatDType::F64);
            let y = gate(p.clone(), s.clone(), 1.0);
            let grads = (y.clone() * w).sum().backward();
            let f64s = |t: Tensor<2>| -> Vec<f64> { t.into_data().try_to_vec().expect("f64") };
            [
                f64s(y),
                f64s(p.grad(&grads).unwrap()),
                f64s(s.grad(&grads).unwrap()),
            ]
        };
        let (fused, composed) = (run(gru_gate), run(gru_gate_composed));
        for (a, b) in fused.iter().zip(&composed) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-12, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "gru_gate: pre-activations [2, 10] and state [2, 4] do not fit")]
    fn gru_gate_with_mismatched_shapes_panics_naming_both_shapes() {
        let device = Device::flex();
        gru_gate(
            Tensor::zeros([2, 10], &device),
            Tensor::zeros([2, 4], &device),
            0.0,
        );
    }

    #[test]
    fn composed_kernels_of_other_backends_match_the_flex_kernels() {
        // The default bodies of `ActivationKernels` (every backend without its own kernels),
        // run on flex tensors, against flex's single-pass kernels.
        use burn::backend::Flex;
        let prim = flex::test_tensor;
        let vec_of = flex::test_values;
        let x = test_inputs(64, 61);
        let g = test_weights(64, 62);
        let (fused_y, fused_s) = Flex::softplus_keeping_sigmoid(prim(&x, [8, 8]));
        let (ref_y, ref_s) = composed_softplus_keeping_sigmoid::<Flex>(prim(&x, [8, 8]));
        assert!(max_mixed_error(&vec_of(fused_y), &vec_of(ref_y)) < 1e-5);
        assert!(max_mixed_error(&vec_of(fused_s), &vec_of(ref_s)) < 1e-5);
        let t = vec_of(Flex::fused_tanh(prim(&x, [8, 8])));
        let fused = vec_of(Flex::tanh_backward(prim(&t, [8, 8]), prim(&g, [8, 8])));
        let reference = vec_of(composed_tanh_backward::<Flex>(
            prim(&t, [8, 8]),
            prim(&g, [8, 8]),
        ));
        assert!(max_mixed_error(&fused, &reference) < 1e-6);

        let (b, d) = (4, 7);
        let (parts, h, grad) = gru_inputs(b, d, 63);
        let (y, gates) =
            Flex::gru_gate_keeping_gates(prim(&parts, [b, 3 * d]), prim(&h, [b, d]), 1.0);
        let (y_ref, gates_ref) = composed_gru_gate_keeping_gates::<Flex>(
            prim(&parts, [b, 3 * d]),
            prim(&h, [b, d]),
            1.0,
        );
        let gates = vec_of(gates);
        assert!(max_mixed_error(&vec_of(y), &vec_of(y_ref)) < 1e-5);
        assert!(max_mixed_error(&gates, &vec_of(gates_ref)) < 1e-5);
        let backward = |composed: bool| {
            let args = (
                prim(&parts, [b, 3 * d]),
                prim(&h, [b, d]),
                prim(&gates, [b, 3 * d]),
                prim(&grad, [b, d]),
            );
            let (dp, dh) = if composed {
                composed_gru_gate_backward::<Flex>(args.0, args.1, args.2, args.3)
            } else {
                Flex::gru_gate_backward(args.0, args.1, args.2, args.3)
            };
            (vec_of(dp), vec_of(dh))
        };
        let (fused, reference) = (backward(false), backward(true));
        assert!(max_mixed_error(&fused.0, &reference.0) < 1e-5);
        assert!(max_mixed_error(&fused.1, &reference.1) < 1e-5);
    }

    #[test]
    fn fused_ops_on_the_test_device_match_the_analytic_values() {
        // flex by default; `WM_TEST_DEVICE=tch-cpu` (with `--features tch`) runs the composed
        // path of the other backends.
        let device = wm_backend::test_device().autodiff();
        let values = [-4.0f32, -1.0, 0.0, 0.5, 2.0, 30.0];
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        type Analytic = fn(f64) -> (f64, f64);
        let cases: [(&str, Unary2, Analytic); 3] = [
            ("sigmoid", sigmoid, |v| {
                let s = 1.0 / (1.0 + (-v).exp());
                (s, s * (1.0 - s))
            }),
            ("tanh", tanh, |v| (v.tanh(), 1.0 - v.tanh().powi(2))),
            ("softplus", softplus, |v| {
                (
                    v.max(0.0) + (-v.abs()).exp().ln_1p(),
                    1.0 / (1.0 + (-v).exp()),
                )
            }),
        ];
        for (name, f, analytic) in cases {
            let x = Tensor::<2>::from_floats([values], &device).require_grad();
            let y = f(x.clone());
            let grads = y.clone().sum().backward();
            let (y, dx) = (to_vec(y), to_vec(x.grad(&grads).expect("x requires grad")));
            for (i, &v) in values.iter().enumerate() {
                let (value, slope) = analytic(f64::from(v));
                assert!(
                    (f64::from(y[i]) - value).abs() < 1e-5 * value.abs().max(1.0),
                    "{name}({v}) = {}",
                    y[i]
                );
                assert!(
                    (f64::from(dx[i]) - slope).abs() < 1e-5,
                    "{name}'({v}) = {}",
                    dx[i]
                );
            }
        }
        // The GRU gate at one hand-computed point: r = sigmoid(0) = 1/2, t = tanh(1/2 * 2),
        // u = sigmoid(1 - 1) = 1/2, h' = 0.5 + (t - 0.5) / 2.
        let p = Tensor::<2>::from_floats([[0.0, 2.0, 1.0]], &device);
        let h = Tensor::<2>::from_floats([[0.5]], &device);
        let y = to_vec(gru_gate(p, h, 1.0))[0];
        let want = 0.5 + (1.0f64.tanh() - 0.5) / 2.0;
        assert!((f64::from(y) - want).abs() < 1e-6, "{y} against {want}");
        let _ = sig;
    }
}
