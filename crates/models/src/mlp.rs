//! A plain multilayer perceptron: `Linear` layers with SiLU between them and none after the last.
//!
//! SiLU rather than ELU: on burn's `flex` CPU backend ELU costs five autograd operations and SiLU
//! two (a sigmoid and a product), and the element-wise transcendental functions are a large part
//! of a training step there. The SiLU is [`wm_kernels::silu`], one fused operation on flex.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// Configuration of an [`Mlp`]: `input -> hidden[0] -> ... -> hidden[n-1] -> output`.
///
/// An empty `hidden` gives a single affine layer.
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Width of the input features.
    pub input: usize,
    /// Widths of the hidden layers, in order.
    pub hidden: Vec<usize>,
    /// Width of the output.
    pub output: usize,
}

/// A multilayer perceptron with SiLU activations between layers and a linear output.
#[derive(Module, Debug)]
pub struct Mlp {
    /// The affine layers, input first.
    pub layers: Vec<Linear>,
}

impl MlpConfig {
    /// Creates the network on `device` with burn's default `Linear` initialisation (seeded by
    /// [`Device::seed`]).
    pub fn init(&self, device: &Device) -> Mlp {
        assert!(
            self.input > 0 && self.output > 0,
            "MLP widths must be positive: {self:?}"
        );
        let mut widths = Vec::with_capacity(self.hidden.len() + 2);
        widths.push(self.input);
        widths.extend(self.hidden.iter().copied());
        widths.push(self.output);
        let layers = widths
            .windows(2)
            .map(|w| {
                assert!(
                    w[1] > 0,
                    "MLP hidden widths must be positive: {:?}",
                    self.hidden
                );
                LinearConfig::new(w[0], w[1]).init(device)
            })
            .collect();
        Mlp { layers }
    }
}

impl Mlp {
    /// Width of the input features.
    pub fn input_width(&self) -> usize {
        self.layers[0].weight.dims()[0]
    }

    /// Width of the output.
    pub fn output_width(&self) -> usize {
        self.layers[self.layers.len() - 1].weight.dims()[1]
    }

    /// Applies the network.
    ///
    /// # Shapes
    /// - `x`: `[..., input]`
    /// - returns `[..., output]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let input = self.input_width();
        assert_eq!(
            x.dims()[D - 1],
            input,
            "Mlp::forward: input shape {:?}, expected last dimension {input}",
            x.dims()
        );
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = wm_kernels::silu(h);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util;

    #[test]
    fn mlp_maps_input_width_to_output_width_and_is_affine_without_hidden_layers() {
        let (_rng, device) = test_util::seeded_device(1);
        let mlp = MlpConfig::new(3, vec![8, 5], 2).init(&device);
        assert_eq!(mlp.layers.len(), 3);
        let y = mlp.forward(Tensor::<2>::zeros([4, 3], &device));
        assert_eq!(y.dims(), [4, 2], "actual shape {:?}", y.dims());

        // No hidden layer: f(x) = xW + b, so f(2x) - 2 f(x) = -b and f(x) + f(-x) = 2b.
        let lin = MlpConfig::new(2, vec![], 1).init(&device);
        let x = Tensor::<2>::from_floats([[0.3, -1.2]], &device);
        let a = lin.forward(x.clone()).into_scalar::<f32>();
        let b = lin.forward(x.neg()).into_scalar::<f32>();
        let zero = lin
            .forward(Tensor::<2>::zeros([1, 2], &device))
            .into_scalar::<f32>();
        assert!((a + b - 2.0 * zero).abs() < 1e-5, "{a} + {b} != 2 * {zero}");
    }

    #[test]
    #[should_panic(expected = "input shape [4, 2]")]
    fn mlp_rejects_a_wrong_input_width_and_names_the_shape() {
        let device = wm_backend::test_device();
        let mlp = MlpConfig::new(3, vec![4], 2).init(&device);
        let _ = mlp.forward(Tensor::<2>::zeros([4, 2], &device));
    }
}
