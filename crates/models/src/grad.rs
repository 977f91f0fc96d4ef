//! Global gradient-norm clipping. burn's `GradientClipping::Norm` clips each parameter tensor on
//! its own; world-model trainers (Dreamer, PlaNet) clip the norm of all gradients together, so
//! that clipping keeps the update's direction.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squared = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squared,
                None => squared,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of the gradients of `module`'s parameters.
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams) -> f32 {
    let mut visitor = SquaredNorm { grads, total: None };
    module.visit(&mut visitor);
    visitor
        .total
        .map_or(0.0, |total| total.into_scalar::<f32>().sqrt())
}

/// Scales all gradients by `max_norm / norm` when their global norm exceeds `max_norm`.
/// Returns the norm before clipping (what gets logged).
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f32) -> f32 {
    let norm = global_norm(module, grads);
    if norm.is_finite() && norm > max_norm {
        module.visit(&mut Scale {
            grads,
            factor: max_norm / norm,
        });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn clipping_scales_the_global_norm_to_the_limit_and_keeps_direction() {
        let device = wm_backend::test_device().autodiff();
        device.seed(0);
        let layer: Linear = LinearConfig::new(3, 2).init(&device);
        let input = Tensor::<2>::from_floats([[1.0, -2.0, 3.0], [0.5, 0.5, 0.5]], &device);
        let loss = layer.forward(input).sum().mul_scalar(100.0);
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let weight_before: Vec<f32> = grads
            .get::<2>(layer.weight.id)
            .expect("weight grad")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let norm = clip_global_norm(&layer, &mut grads, 1.0);
        assert!(
            norm > 1.0,
            "the test needs a norm above the limit, got {norm}"
        );
        assert!(
            (global_norm(&layer, &grads) - 1.0).abs() < 1e-4,
            "clipped norm {}",
            global_norm(&layer, &grads)
        );
        let weight_after: Vec<f32> = grads
            .get::<2>(layer.weight.id)
            .expect("weight grad")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        for (before, after) in weight_before.iter().zip(&weight_after) {
            assert!(
                (before / norm - after).abs() < 1e-5,
                "direction changed: {before} -> {after}"
            );
        }
    }

    #[test]
    fn small_gradients_are_left_alone() {
        let device = wm_backend::test_device().autodiff();
        let layer: Linear = LinearConfig::new(2, 1).init(&device);
        let loss = layer
            .forward(Tensor::<2>::from_floats([[0.01, 0.01]], &device))
            .sum()
            .mul_scalar(0.001);
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let before = global_norm(&layer, &grads);
        assert_eq!(clip_global_norm(&layer, &mut grads, 10.0), before);
        assert_eq!(global_norm(&layer, &grads), before);
    }
}
