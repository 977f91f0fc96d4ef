//! One training update: loss, backward, global-norm gradient clipping, optimiser step.

use burn::optim::{GradientsParams, ModuleOptimizer};
use wm_models::LossOutput;

use crate::config::SequenceTensors;
use crate::model::Rssm;

pub use wm_models::grad::{clip_global_norm, global_norm as global_grad_norm};

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
