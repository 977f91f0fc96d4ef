//! What the evaluation needs of a model beyond [`WorldModel`] (row selection of states and the
//! held-out likelihood), implemented for each model class: the one place of the evaluation
//! that knows which kinds of model exist. [`crate::eval`] is generic over [`EvalModel`] and
//! reaches the concrete model of an [`AnyModel`] through [`AnyModel::visit_eval`].

use burn::tensor::{Int, Tensor, TensorData};
use wm_imagine::{OneStepState, WorldModel};
use wm_models::{AnyTransitionModel, TransitionModel};
use wm_replay::ReplayBuffer;
use wm_rssm::{Rssm, RssmState};

use crate::data::{all_transitions, to_tensors};
use crate::eval::{NllEntry, NllEstimator};
use crate::metrics::nats_per_dim;
use crate::model::AnyModel;

/// Transitions per likelihood chunk of a one-step model (the cVAE chunks its samples inside).
const NLL_CHUNK: usize = 256;
/// Rows (sequences times particles) per likelihood pass of a sequence model.
const PARTICLE_ROWS: usize = 4096;

/// Held-out likelihood estimates, or why there are none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeldOutNll {
    /// The estimates (empty when the model has no likelihood now).
    pub entries: Vec<NllEntry>,
    /// Why an estimate is missing, said plainly (`None` when nothing is missing).
    pub note: Option<String>,
}

/// A model the held-out evaluation can score: imagination through [`WorldModel`], plus these.
pub trait EvalModel: WorldModel {
    /// The rows `rows` of a batched state, in that order.
    fn select_rows(&self, state: &Self::State, rows: &[usize]) -> Self::State;

    /// The likelihood of the first `max_transitions` held-out transitions of `buffer` (in
    /// episode order), for each number of samples in `ks` (sorted, distinct, positive) where
    /// the model's estimate depends on it.
    fn held_out_nll(
        &self,
        buffer: &ReplayBuffer,
        max_transitions: usize,
        ks: &[usize],
        device: &wm_backend::Device,
    ) -> HeldOutNll;
}

/// Code that runs on whichever model an [`AnyModel`] holds.
pub trait EvalModelVisitor {
    /// What the visit returns.
    type Output;
    /// Runs on the concrete model.
    fn visit<M: EvalModel>(self, model: &M) -> Self::Output;
}

impl AnyModel {
    /// Runs `visitor` on the concrete model (the one dispatch of the evaluation).
    pub fn visit_eval<V: EvalModelVisitor>(&self, visitor: V) -> V::Output {
        match self {
            Self::Transition(model) => visitor.visit(model),
            Self::Rssm(model) => visitor.visit(model),
        }
    }
}

fn index(rows: &[usize], device: &wm_backend::Device) -> Tensor<1, Int> {
    let values: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(values, [rows.len()]), device)
}

/// The one-step models score each transition with `ln p(s' | s, a)`: exact for the Gaussian
/// MLP, exact for the ensemble (the mixture density, the log-mean-exp of the member densities),
/// and for the deterministic MLP under its fitted residual Gaussian (not available before
/// that fit, which runs on the training data after training), the IWAE bound with `k` samples
/// for the cVAE.
impl EvalModel for AnyTransitionModel {
    fn select_rows(&self, state: &OneStepState, rows: &[usize]) -> OneStepState {
        state.select(index(rows, &state.obs.device()))
    }

    fn held_out_nll(
        &self,
        buffer: &ReplayBuffer,
        max_transitions: usize,
        ks: &[usize],
        device: &wm_backend::Device,
    ) -> HeldOutNll {
        let (estimator, ks): (NllEstimator, Vec<usize>) = match self {
            Self::Cvae(_) => (NllEstimator::Iwae, ks.to_vec()),
            Self::Gaussian(_) | Self::Ensemble(_) => (NllEstimator::Exact, vec![1]),
            Self::Deterministic(_) if self.residual_std().is_some() => {
                (NllEstimator::Exact, vec![1])
            }
            Self::Deterministic(_) => {
                return HeldOutNll {
                    entries: Vec::new(),
                    note: Some(
                        "no likelihood yet: the deterministic MLP's residual std is fitted on the training data after training \
                         (unit variance would make the number meaningless)"
                            .into(),
                    ),
                };
            }
        };
        let data = all_transitions(buffer, max_transitions);
        let rows = data.batch_size;
        let entries = ks
            .iter()
            .map(|&k| {
                let mut total = 0.0f64;
                for start in (0..rows).step_by(NLL_CHUNK) {
                    let batch = to_tensors(&data, start..(start + NLL_CHUNK).min(rows), device);
                    let values = self
                        .log_likelihood(&batch, k)
                        .into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .expect("f32 log-likelihoods");
                    total += values.iter().map(|&v| f64::from(v)).sum::<f64>();
                }
                NllEntry {
                    estimator,
                    k,
                    nats_per_dim: nats_per_dim(total, rows, data.obs_dim),
                    transitions: rows,
                }
            })
            .collect();
        HeldOutNll {
            entries,
            note: None,
        }
    }
}

/// The RSSM scores whole held-out episodes with `K = max(ks)` particles
/// ([`wm_rssm::likelihood`]): the filtering predictive `ln p(o_t | o_{<t}, a)` of each
/// observation after the first (the same transitions as the one-step models score) and the
/// IWAE bound on `ln p(o_{0:T} | a)` per observation, for each `k`.
impl EvalModel for Rssm {
    fn select_rows(&self, state: &RssmState, rows: &[usize]) -> RssmState {
        let device = state.deter.device();
        RssmState {
            deter: state.deter.clone().select(0, index(rows, &device)),
            stoch: state.stoch.clone().select(0, index(rows, &device)),
        }
    }

    fn held_out_nll(
        &self,
        buffer: &ReplayBuffer,
        max_transitions: usize,
        ks: &[usize],
        device: &wm_backend::Device,
    ) -> HeldOutNll {
        let spec = buffer.spec();
        let (o, a) = (spec.obs_dim, spec.action_width());
        // The first `max_transitions` transitions in episode order: (episode, transitions used).
        let mut remaining = max_transitions;
        let mut sequences = Vec::new();
        for episode in buffer.episodes() {
            if remaining == 0 {
                break;
            }
            let used = episode.len().min(remaining);
            if used > 0 {
                sequences.push((episode, used));
                remaining -= used;
            }
        }
        let particles = ks.iter().copied().max().unwrap_or(1);
        let per_pass = (PARTICLE_ROWS / particles).max(1);
        let mut totals: Option<Vec<wm_rssm::SequenceLikelihood>> = None;
        for chunk in sequences.chunks(per_pass) {
            let steps = chunk.iter().map(|(_, used)| used + 1).max().unwrap_or(1);
            let b = chunk.len();
            let (mut obs, mut action) = (vec![0.0f32; b * steps * o], vec![0.0f32; b * steps * a]);
            for (row, (episode, used)) in chunk.iter().enumerate() {
                for t in 0..=*used {
                    obs[(row * steps + t) * o..(row * steps + t + 1) * o]
                        .copy_from_slice(episode.observation(o, t));
                    if t > 0 {
                        action[(row * steps + t) * a..(row * steps + t + 1) * a]
                            .copy_from_slice(episode.action(a, t - 1));
                    }
                }
            }
            let lengths: Vec<usize> = chunk.iter().map(|(_, used)| used + 1).collect();
            let out = wm_rssm::sequence_likelihood(
                self,
                Tensor::from_data(TensorData::new(obs, [b, steps, o]), device),
                Tensor::from_data(TensorData::new(action, [b, steps, a]), device),
                &lengths,
                ks,
            );
            match &mut totals {
                Some(totals) => totals.iter_mut().zip(&out).for_each(|(t, x)| t.add(x)),
                None => totals = Some(out),
            }
        }
        let entries = totals
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| {
                [
                    NllEntry {
                        estimator: NllEstimator::Predictive,
                        k: s.k,
                        nats_per_dim: nats_per_dim(s.predictive, s.transitions, o),
                        transitions: s.transitions,
                    },
                    NllEntry {
                        estimator: NllEstimator::SequenceIwae,
                        k: s.k,
                        nats_per_dim: nats_per_dim(s.bound, s.observations, o),
                        transitions: s.observations,
                    },
                ]
            })
            .collect();
        HeldOutNll {
            entries,
            note: None,
        }
    }
}
