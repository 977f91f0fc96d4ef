//! One training update: loss, backward, global-norm gradient clipping, optimiser step.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use wm_models::LossOutput;

use crate::config::SequenceTensors;
use crate::model::Rssm;

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

/// The global L2 norm of the gradients of `module`'s parameters (one read-back).
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f32 {
    let mut visitor = SquaredNorm { grads, total: None };
    module.visit(&mut visitor);
    visitor
        .total
        .map_or(0.0, |total| total.into_scalar::<f32>().sqrt())
}

/// Scales all gradients by `max_norm / norm` when their global norm exceeds `max_norm`
/// (Dreamer's clipping, which keeps the update's direction). Returns the norm before clipping.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f32) -> f32 {
    let norm = global_grad_norm(module, grads);
    if norm.is_finite() && norm > max_norm {
        module.visit(&mut Scale {
            grads,
            factor: max_norm / norm,
        });
    }
    norm
}

/// One gradient update of the RSSM: [`Rssm::loss`], backward, global-norm clipping at
/// `grad_clip` (pass `f32::INFINITY` to disable), `optimizer.step(lr, ..)`. The norm before
/// clipping is added to the loss metrics as `grad_norm`. The model must live on an autodiff
/// device. This is what the trainer and the benchmark time.
pub fn update_step(
    model: Rssm,
    optimizer: &mut ModuleOptimizer,
    batch: &SequenceTensors,
    lr: f64,
    grad_clip: f32,
) -> (Rssm, LossOutput) {
    let mut loss = model.loss(batch);
    let mut grads = GradientsParams::from_grads(loss.total.backward(), &model);
    let norm = clip_global_norm(&model, &mut grads, grad_clip);
    loss.metrics.insert("grad_norm".into(), f64::from(norm));
    (optimizer.step(lr, model, grads), loss)
}
