//! The update: sample a batch of the kind the model wants, loss, backward, global-norm
//! clipping, Adam; the one step every model, `wm train` and `wm bench update` use. A step whose
//! loss or gradient norm is not finite is skipped (the model and the optimiser are left as
//! they were), and [`NonFiniteGuard`] counts such steps and stops a run that keeps diverging.

use std::collections::BTreeMap;

use burn::optim::{GradientsParams, ModuleOptimizer};
use rand_chacha::ChaCha8Rng;
use wm_agent::ActorCritic;
use wm_backend::Device;
use wm_models::LossOutput;
use wm_replay::{ReplayBuffer, SequenceBatch, SequenceMode};

use crate::config::OptimConfig;
use crate::data::to_tensors;
use crate::error::TrainError;
use crate::grad::clip_global_norm;
use crate::model::{AnyModel, Batch, BatchKind, TrainableModel};

/// Steps of the sequences the actor-critic's start states of a sequence model come from.
const AGENT_START_SEQ_LEN: usize = 16;

/// What one update did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The loss (terms, weights, total, metrics) on the batch, before the step.
    pub loss: LossOutput,
    /// The total loss as a number.
    pub total: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
    /// Whether the optimiser stepped: false when the loss or the gradient norm was not finite.
    pub applied: bool,
}

impl StepOutcome {
    /// The loss terms and the gradient norm as `name=value` text (for errors).
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("total={}", self.total)];
        parts.extend(
            self.loss
                .terms
                .iter()
                .map(|(name, term)| format!("{name}={}", term.clone().into_scalar::<f32>())),
        );
        parts.push(format!("grad_norm={}", self.grad_norm));
        parts.join(", ")
    }
}

/// One gradient update of any [`TrainableModel`]: loss on `batch`, backward, global-norm
/// clipping at `grad_clip`, Adam at `lr`. When the loss or the gradient norm is NaN or infinite
/// the step is skipped: the model comes back unchanged and the optimiser's state untouched.
/// With `diagnose`, the model's gradient norms per part
/// ([`TrainableModel::grad_norms_by_module`], before clipping) join the loss metrics as
/// `grad_norm_{part}` (the trainer asks at its log schedule only: each is a host read).
/// The model must live on an autodiff device.
pub fn update_step<M: TrainableModel>(
    model: M,
    optimizer: &mut ModuleOptimizer,
    batch: &Batch,
    lr: f64,
    grad_clip: f32,
    diagnose: bool,
) -> (M, StepOutcome) {
    let loss = model.loss(batch);
    let total = loss.total.clone().into_scalar::<f32>();
    if !total.is_finite() {
        return (
            model,
            StepOutcome {
                loss,
                total,
                grad_norm: f32::NAN,
                applied: false,
            },
        );
    }
    let mut loss = loss;
    let mut grads = GradientsParams::from_grads(loss.total.backward(), &model);
    if diagnose {
        for (part, norm) in model.grad_norms_by_module(&grads) {
            loss.metrics
                .insert(format!("grad_norm_{part}"), f64::from(norm));
        }
    }
    let grad_norm = clip_global_norm(&model, &mut grads, grad_clip);
    if !grad_norm.is_finite() {
        return (
            model,
            StepOutcome {
                loss,
                total,
                grad_norm,
                applied: false,
            },
        );
    }
    (
        optimizer.step(lr, model, grads),
        StepOutcome {
            loss,
            total,
            grad_norm,
            applied: true,
        },
    )
}

/// A batch of `kind` sampled from `replay` on `device`: `batch_size` transitions, or
/// `batch_size` sequences of `seq_len` steps straddling episode boundaries (`is_first` marks
/// each start, so short episodes, like random CartPole ones, still fill `seq_len` steps).
pub fn sample_batch(
    kind: BatchKind,
    replay: &ReplayBuffer,
    rng: &mut ChaCha8Rng,
    batch_size: usize,
    seq_len: usize,
    device: &Device,
) -> Result<Batch, TrainError> {
    Ok(match kind {
        BatchKind::Transitions => {
            let batch = replay.sample_transitions(rng, batch_size)?;
            Batch::Transitions(to_tensors(&batch, 0..batch.batch_size, device))
        }
        BatchKind::Sequences => {
            let batch =
                replay.sample_sequences(rng, batch_size, seq_len, SequenceMode::Straddle)?;
            Batch::Sequences(sequence_tensors(&batch, device))
        }
    })
}

/// One update of any model from a batch sampled out of `replay` (see [`update_step`]). This is
/// the step `wm train` runs and `wm bench update` times.
pub fn update_from_replay(
    model: AnyModel,
    optimizer: &mut ModuleOptimizer,
    replay: &ReplayBuffer,
    rng: &mut ChaCha8Rng,
    optim: &OptimConfig,
    device: &Device,
    diagnose: bool,
) -> Result<(AnyModel, StepOutcome), TrainError> {
    let batch = sample_batch(
        model.batch_kind(),
        replay,
        rng,
        optim.batch_size,
        optim.seq_len,
        device,
    )?;
    Ok(update_step(
        model,
        optimizer,
        &batch,
        optim.lr,
        optim.grad_clip,
        diagnose,
    ))
}

/// One actor-critic update from start states replayed on `device` (without autodiff): about
/// `starts` observations for the one-step models; for a sequence model, every posterior state
/// of `starts / 16` replayed sequences of 16 steps (Dreamer starts from all posterior states of
/// a batch).
pub fn agent_update(
    agent: &mut ActorCritic,
    model: &AnyModel,
    replay: &ReplayBuffer,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<BTreeMap<String, f64>, TrainError> {
    let starts = agent.config().starts;
    let batch = match model.batch_kind() {
        BatchKind::Transitions => {
            sample_batch(BatchKind::Transitions, replay, rng, starts, 1, device)?
        }
        BatchKind::Sequences => {
            let sequences = starts.div_ceil(AGENT_START_SEQ_LEN).max(1);
            sample_batch(
                BatchKind::Sequences,
                replay,
                rng,
                sequences,
                AGENT_START_SEQ_LEN,
                device,
            )?
        }
    };
    Ok(model.update_agent(agent, &batch))
}

/// A replay sequence batch as tensors on `device`.
pub fn sequence_tensors(batch: &SequenceBatch, device: &Device) -> wm_rssm::SequenceTensors {
    wm_rssm::SequenceTensors::from_host(
        &batch.obs,
        &batch.actions,
        &batch.rewards,
        &batch.is_first,
        &batch.is_terminal,
        batch.batch_size,
        batch.seq_len,
        batch.obs_dim,
        batch.action_width,
        device,
    )
}

/// Counts skipped (non-finite) updates and stops the run after `max_in_a_row` in a row.
#[derive(Debug, Clone)]
pub struct NonFiniteGuard {
    max_in_a_row: usize,
    in_a_row: usize,
    /// Skipped updates over the whole run (resumed runs continue the count).
    pub total: u64,
}

impl NonFiniteGuard {
    /// A guard that allows `max_in_a_row - 1` skipped updates in a row, with `total` skipped so far.
    pub fn new(max_in_a_row: usize, total: u64) -> Self {
        Self {
            max_in_a_row,
            in_a_row: 0,
            total,
        }
    }

    /// Records the outcome of update number `update`.
    ///
    /// # Errors
    /// [`TrainError::Diverged`] when this is the `max_in_a_row`-th skipped update in a row.
    pub fn record(&mut self, update: u64, outcome: &StepOutcome) -> Result<(), TrainError> {
        if outcome.applied {
            self.in_a_row = 0;
            return Ok(());
        }
        self.in_a_row += 1;
        self.total += 1;
        if self.in_a_row >= self.max_in_a_row {
            return Err(TrainError::Diverged {
                update,
                in_a_row: self.in_a_row,
                terms: outcome.describe(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::optim::AdamConfig;
    use burn::tensor::{Tensor, TensorData};
    use wm_models::{ActionSpec, DeterministicMlpConfig, ModelSpec, Normalizer, TransitionTensors};

    use crate::model::ModelConfig;

    fn parameters(model: &AnyModel) -> Vec<f32> {
        let bytes = model.clone().into_record().into_bytes().expect("record");
        bytes.iter().map(|&b| f32::from(b)).collect()
    }

    fn batch(obs: Vec<f32>, device: &Device) -> Batch {
        let n = obs.len() / 2;
        let t1 = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [n]), device);
        let t2 = |v: Vec<f32>, w: usize| Tensor::<2>::from_data(TensorData::new(v, [n, w]), device);
        Batch::Transitions(TransitionTensors {
            next_obs: t2(obs.iter().map(|x| x + 0.1).collect(), 2),
            obs: t2(obs, 2),
            action: t2(vec![1.0; n], 1),
            reward: t1(vec![1.0; n]),
            terminated: t1(vec![0.0; n]),
        })
    }

    #[test]
    fn a_non_finite_batch_skips_the_update_and_a_finite_one_applies_it() {
        let device = wm_backend::test_device().autodiff();
        device.seed(0);
        let spec = ModelSpec {
            obs_dim: 2,
            action: ActionSpec::Discrete { n: 2 },
        };
        let config = ModelConfig::Deterministic(DeterministicMlpConfig {
            hidden: vec![4],
            ..Default::default()
        });
        let model = config.init(&spec, Normalizer::identity(2), &device);
        let mut optimizer = AdamConfig::new().init();
        let before = parameters(&model);

        // The injected batch: one NaN observation poisons the loss.
        let poisoned = batch(vec![0.5, f32::NAN, 0.1, 0.2], &device);
        let (model, outcome) = update_step(model, &mut optimizer, &poisoned, 1e-2, 100.0, false);
        assert!(
            !outcome.applied && !outcome.total.is_finite(),
            "{}",
            outcome.describe()
        );
        assert_eq!(
            parameters(&model),
            before,
            "a skipped update must leave the weights as they were"
        );
        assert!(model.parameters_finite());

        let clean = batch(vec![0.5, 0.3, 0.1, 0.2], &device);
        let (model, outcome) = update_step(model, &mut optimizer, &clean, 1e-2, 100.0, true);
        assert!(
            outcome.applied && outcome.total.is_finite() && outcome.grad_norm.is_finite(),
            "{}",
            outcome.describe()
        );
        assert_ne!(
            parameters(&model),
            before,
            "a finite update changes the weights"
        );
    }

    /// The parts partition the RSSM's parameters, so their norms combine to the global norm:
    /// `sqrt(sum_part norm_part^2) = grad_norm` (both before clipping).
    #[test]
    fn diagnosed_rssm_updates_log_part_norms_that_combine_to_the_global_norm() {
        let device = wm_backend::test_device().autodiff();
        device.seed(0);
        let spec = ModelSpec {
            obs_dim: 2,
            action: ActionSpec::Discrete { n: 2 },
        };
        let config = ModelConfig::Rssm(wm_rssm::RssmConfig {
            deter: 8,
            hidden: 8,
            encoder_hidden: vec![8],
            decoder_hidden: vec![8],
            head_hidden: vec![8],
            norm: true,
            ..Default::default()
        });
        let model = config.init(&spec, Normalizer::identity(2), &device);
        let (b, t) = (2, 4);
        let obs: Vec<f32> = (0..b * t * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        let action: Vec<f32> = (0..b * t).map(|i| (i % 2) as f32).collect();
        let reward = vec![1.0; b * t];
        let mut is_first = vec![0.0; b * t];
        (is_first[0], is_first[t]) = (1.0, 1.0);
        let is_terminal = vec![0.0; b * t];
        let batch = Batch::Sequences(wm_rssm::SequenceTensors::from_host(
            &obs,
            &action,
            &reward,
            &is_first,
            &is_terminal,
            b,
            t,
            2,
            1,
            &device,
        ));
        let mut optimizer = AdamConfig::new().init();
        let (model, quiet) = update_step(model, &mut optimizer, &batch, 1e-3, 1e9, false);
        assert!(
            !quiet
                .loss
                .metrics
                .keys()
                .any(|k| k.starts_with("grad_norm_")),
            "{:?}",
            quiet.loss.metrics.keys().collect::<Vec<_>>()
        );
        let (_, outcome) = update_step(model, &mut optimizer, &batch, 1e-3, 1e9, true);
        let parts: Vec<(&String, &f64)> = outcome
            .loss
            .metrics
            .iter()
            .filter(|(k, _)| k.starts_with("grad_norm_"))
            .collect();
        let names: Vec<&str> = parts.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "grad_norm_cell",
                "grad_norm_cont",
                "grad_norm_decoder",
                "grad_norm_encoder",
                "grad_norm_posterior",
                "grad_norm_prior",
                "grad_norm_reward"
            ],
            "parts logged"
        );
        let combined = parts.iter().map(|(_, v)| *v * *v).sum::<f64>().sqrt();
        let global = f64::from(outcome.grad_norm);
        assert!(
            (combined - global).abs() <= 1e-4 * global.max(1.0),
            "parts combine to {combined}, the global norm is {global}"
        );
    }

    #[test]
    fn the_guard_counts_skips_and_stops_after_the_configured_number_in_a_row() {
        let device = wm_backend::test_device();
        let loss = |total: f32| LossOutput {
            total: Tensor::<1>::from_data(TensorData::new(vec![total], [1]), &device),
            terms: BTreeMap::new(),
            weights: BTreeMap::new(),
            metrics: BTreeMap::new(),
        };
        let skipped = StepOutcome {
            loss: loss(f32::NAN),
            total: f32::NAN,
            grad_norm: f32::NAN,
            applied: false,
        };
        let applied = StepOutcome {
            loss: loss(1.0),
            total: 1.0,
            grad_norm: 0.5,
            applied: true,
        };
        let mut guard = NonFiniteGuard::new(3, 0);
        guard.record(1, &skipped).expect("1 in a row");
        guard.record(2, &skipped).expect("2 in a row");
        guard
            .record(3, &applied)
            .expect("an applied update resets the run of skips");
        guard.record(4, &skipped).expect("1 in a row");
        guard.record(5, &skipped).expect("2 in a row");
        let error = guard.record(6, &skipped).unwrap_err();
        assert_eq!(guard.total, 5);
        let message = error.to_string();
        assert!(
            message.contains("3 updates in a row up to update 6") && message.contains("total=NaN"),
            "{message}"
        );
    }
}
