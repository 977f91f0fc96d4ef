//! Fused tensor operations for the models, each with its own backward pass.
//!
//! [`silu`] is SiLU, `x * sigmoid(x)`. burn composes it from a sigmoid and a product, so on the
//! autodiff backend a training step runs `exp` twice per element (the sigmoid's backward pass
//! recomputes the sigmoid from its input) and four element-wise loops. Here it is one operation:
//!
//! - on burn's `flex` CPU backend, a backend extension ([`FusedActivationOps`], declared with
//!   burn's `#[backend_extension]`) whose forward pass computes `x * sigmoid(x)` in one loop with
//!   a vectorised `exp` ([`simd`]) and keeps the sigmoid, and whose backward pass computes
//!   `dy * s * (1 + x * (1 - s))` in one loop, without any `exp`;
//! - on every other backend (libtorch, GPUs), burn's own composed `silu`, unchanged.
//!
//! Model code calls [`silu`] on any device and stays backend-agnostic: the device picks the path
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
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
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

/// Whether `device` is flex, with or without autodiff: the devices [`FusedActivationOps`] is
/// implemented for.
pub fn runs_on_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// Fused activations as a burn backend extension: implemented for flex (vectorised kernels) and
/// for autodiff over any backend that has [`SiluKernels`] (one backward step). Calling it on
/// another backend panics, which is why models call [`silu`], which never does.
#[backend_extension(Flex, Autodiff)]
pub trait FusedActivationOps: Backend {
    /// SiLU, `x * sigmoid(x)`, element-wise.
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The two halves of a fused SiLU that the autodiff backward step needs from the inner backend.
/// The default bodies compose standard operations; flex overrides them with single-pass kernels.
pub trait SiluKernels: Backend {
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
}

/// [`SiluKernels::silu_keeping_sigmoid`] from standard operations.
fn composed_silu_keeping_sigmoid<B: Backend>(
    x: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let sigmoid = B::sigmoid(x.clone());
    (B::float_mul(x, sigmoid.clone()), sigmoid)
}

/// [`SiluKernels::silu_backward`] from standard operations.
fn composed_silu_backward<B: Backend>(
    x: FloatTensor<B>,
    sigmoid: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    // s * (1 + x * (1 - s))
    let one_minus_s = B::float_add_scalar(B::float_neg(sigmoid.clone()), 1.0.into());
    let inner = B::float_add_scalar(B::float_mul(x, one_minus_s), 1.0.into());
    B::float_mul(grad, B::float_mul(sigmoid, inner))
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
}
