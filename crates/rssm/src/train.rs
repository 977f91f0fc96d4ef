//! One training update: loss, backward, global-norm gradient clipping, optimiser step.

use burn::optim::{GradientsParams, ModuleOptimizer};
use wm_models::LossOutput;

use crate::config::SequenceTensors;
use crate::model::Rssm;

pub use wm_models::grad::{clip_global_norm, global_norm as global_grad_norm};

/// One gradient update of the RSSM: [`Rssm::loss`], backward, global-norm clipping at
/// `grad_clip` (pass `f32::INFINITY` to disable), `optimizer.step(lr, ..)`. The norm before
/// clipping is added to the loss metrics as `grad_norm`, and the norms per module (before
/// clipping) as `grad_norm_{module}` (see [`module_grad_norms`]). The model must live on an autodiff
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
    for (name, norm) in module_grad_norms(&model, &grads) {
        loss.metrics
            .insert(format!("grad_norm_{name}"), f64::from(norm));
    }
    let norm = clip_global_norm(&model, &mut grads, grad_clip);
    loss.metrics.insert("grad_norm".into(), f64::from(norm));
    (optimizer.step(lr, model, grads), loss)
}

/// Gradient norms per module group: `encoder`, `cell` (input layers and GRU), `prior`,
/// `posterior`, `decoder`, `reward`, `cont`. One host read each (a diagnostic of which part
/// of the model the loss drives).
pub fn module_grad_norms(model: &Rssm, grads: &GradientsParams) -> Vec<(&'static str, f32)> {
    let pair = |a: f32, b: f32| (a * a + b * b).sqrt();
    let cell = [
        global_grad_norm(&model.img_in_stoch, grads),
        global_grad_norm(&model.img_in_action, grads),
        global_grad_norm(&model.gru, grads),
        global_grad_norm(&model.norm_in, grads),
        global_grad_norm(&model.norm_gru, grads),
    ];
    vec![
        ("encoder", global_grad_norm(&model.encoder, grads)),
        ("cell", cell.iter().map(|x| x * x).sum::<f32>().sqrt()),
        (
            "prior",
            pair(
                pair(
                    global_grad_norm(&model.prior_hidden, grads),
                    global_grad_norm(&model.prior_stats, grads),
                ),
                global_grad_norm(&model.norm_prior, grads),
            ),
        ),
        (
            "posterior",
            pair(
                pair(
                    global_grad_norm(&model.post_deter, grads),
                    global_grad_norm(&model.post_embed, grads),
                ),
                pair(
                    global_grad_norm(&model.post_stats, grads),
                    global_grad_norm(&model.norm_post, grads),
                ),
            ),
        ),
        (
            "decoder",
            pair(
                global_grad_norm(&model.decoder, grads),
                global_grad_norm(&model.obs_log_std, grads),
            ),
        ),
        ("reward", global_grad_norm(&model.reward_head, grads)),
        ("cont", global_grad_norm(&model.cont_head, grads)),
    ]
}
