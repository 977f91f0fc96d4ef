//! Held-out evaluation of any world model, with one protocol for every model class.
//!
//! - **Windows and context.** Every held-out episode is filtered once from its first
//!   observation ([`WorldModel::start_every_step`] over the whole episode, posterior modes): the
//!   state at step `t0` has seen `o_0..=o_t0` and the actions between them (the RSSM filters
//!   them; a one-step model's state is `o_t0`, so it ignores the rest). From such a state the
//!   model imagines under the episode's true actions (central predictions: `mean_next`, the
//!   RSSM's prior modes) and is compared with the real observations.
//! - **One-step metrics** (one-step RMSE per dimension, reward RMSE, termination accuracy and
//!   recall) use a window at *every* step of every held-out episode, horizon 1.
//! - **Open-loop RMSE** at horizon h uses windows every [`OPEN_LOOP_STRIDE`] steps (at most
//!   `max_open_loop_windows`, evenly thinned) and counts the windows that reach h inside their
//!   episode.
//! - **NLL** in nats per observation dimension, in raw observation units, on the first
//!   `max_nll_transitions` held-out transitions in episode order (see [`NllEstimator`]): exact
//!   for the Gaussian MLP, the ensemble (its mixture over members) and for the deterministic MLP under its fitted residual Gaussian (none
//!   before that fit, said in the report), the IWAE bound for the cVAE, and for the RSSM the
//!   filtering predictive `-ln p(o_t | o_{<t}, a)` of the same transitions beside a sequence
//!   IWAE bound. The model-specific parts live in [`crate::eval_model`]; this module holds no
//!   match on model kinds.
//! - **Energy score at h = 1** (a proper score that needs only samples, so that sample models
//!   and density models compare on one footing; [`crate::scores::energy_score`]), on the same
//!   first `max_nll_transitions` held-out transitions: from each filtered state the model draws
//!   [`ENERGY_SCORE_SAMPLES`] next observations (`imagine` with `sample = true`: the cVAE's
//!   prior, the Gaussian's noise, the RSSM's prior; the deterministic MLP repeats its
//!   prediction) under the true action, scored against the real next observation in raw units.
//! - **Energy score at h = [`LONG_ENERGY_HORIZON`]**: from the open-loop windows that reach it
//!   (at most [`MAX_LONG_ENERGY_WINDOWS`]), [`ENERGY_SCORE_SAMPLES`] sampled rollouts under the
//!   true actions, their observations at that horizon scored against the real one.
//! - **Scores against the true law** ([`TruthScores`]), when the environment's transition law is
//!   known ([`EvalOptions::truth`]: the stochastic environments of `wm_envs`): at each of the
//!   energy score's transitions, [`ENERGY_SCORE_SAMPLES`] samples of the model against as many
//!   of the true `p(s' | s, a)` at the real `(s, a)`: the unbiased MMD² with an RBF kernel of
//!   median-heuristic bandwidth, the energy distance, and mode coverage over the law's known
//!   modes (radius [`MODE_RADIUS_FRACTION`] of the smallest distance between two mode centres, a
//!   mode covered when it gets at least [`MODE_MIN_FRACTION`] of the samples; transitions with
//!   one mode are skipped), and the fraction of samples near no mode: a broad unimodal law can
//!   reach every mode, but it also puts samples between them.
//!   The true samples come from a fixed seed, so a report is reproducible.

use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use wm_envs::{Action, StochasticTransition};
use wm_imagine::{Context, ImagineActions, WorldModel};
use wm_replay::{Episode, ReplayBuffer};

use crate::eval_model::{EvalModel, EvalModelVisitor};
use crate::metrics::{HorizonErrors, MeanSquare, TerminationCounts};
use crate::model::AnyModel;
use crate::scores::{energy_distance, energy_score, mmd2_median_heuristic, mode_coverage};

/// Start states of open-loop windows are taken every this many steps of an episode.
pub const OPEN_LOOP_STRIDE: usize = 5;
/// Observations a plot lets a model see before it imagines (PlaNet's and Dreamer's
/// video-prediction protocol: observe 5, predict the rest); see [`imagine_from_context`].
pub const CONTEXT_STEPS: usize = 5;
/// Windows imagined in one batch.
const WINDOW_CHUNK: usize = 1024;
/// Next observations drawn from the model per held-out transition for the energy score.
pub const ENERGY_SCORE_SAMPLES: usize = 32;
/// Filtered rows (episodes times padded length) per batch.
const FILTER_ROWS: usize = 16_384;
/// The horizon of the multi-step energy score.
pub const LONG_ENERGY_HORIZON: usize = 10;
/// At most this many windows for the multi-step energy score.
pub const MAX_LONG_ENERGY_WINDOWS: usize = 256;
/// A mode counts as covered when at least this fraction of the model's samples fall to it.
pub const MODE_MIN_FRACTION: f64 = 0.05;
/// The mode-coverage radius as a fraction of the smallest distance between two mode centres.
pub const MODE_RADIUS_FRACTION: f64 = 0.25;
/// Seed of the true law's samples in [`TruthScores`].
const TRUTH_SEED: u64 = 0x7275_7468;

/// An environment's known transition law, for [`TruthScores`].
#[derive(Clone)]
pub struct TrueLaw {
    /// The environment's name.
    pub env: String,
    /// Its transition law.
    pub law: Arc<dyn StochasticTransition>,
}

impl TrueLaw {
    /// The law of the environment `env` when `wm_envs` knows it (`None` for deterministic
    /// environments and unknown names).
    pub fn of_env(env: &str) -> Option<Self> {
        let law = wm_envs::stochastic_transition(env).ok().flatten()?;
        Some(Self {
            env: env.to_string(),
            law: Arc::from(law),
        })
    }
}

impl std::fmt::Debug for TrueLaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrueLaw({})", self.env)
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Samples (importance samples or particles) for each likelihood estimate; models with an
    /// exact likelihood give one entry whatever the list.
    pub iwae_samples: Vec<usize>,
    /// At most this many held-out transitions for the likelihood.
    pub max_nll_transitions: usize,
    /// Open-loop horizons (empty: skip the open-loop test).
    pub horizons: Vec<usize>,
    /// At most this many open-loop windows.
    pub max_open_loop_windows: usize,
    /// The environment's true transition law, when known: adds [`TruthScores`].
    pub truth: Option<TrueLaw>,
}

/// How a likelihood was estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NllEstimator {
    /// Exact `-ln p(s' | s, a)` (Gaussian MLP; the ensemble's mixture density; deterministic MLP
    /// with its residual std).
    Exact,
    /// The cVAE's importance-weighted bound on `-ln p(s' | s, a)` with `k` samples (an upper
    /// bound on the NLL in expectation that tightens as `k` grows).
    Iwae,
    /// The RSSM's filtering predictive `-ln p(o_t | o_{<t}, a)` with `k` particles (consistent,
    /// not a bound): the number that compares with the one-step models'.
    Predictive,
    /// The RSSM's IWAE bound on `-ln p(o_{0:T} | a)` per observation, first observations included.
    SequenceIwae,
}

/// One likelihood estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NllEntry {
    /// How it was estimated.
    pub estimator: NllEstimator,
    /// Samples or particles (1 for exact likelihoods).
    pub k: usize,
    /// Negative log-likelihood per observation dimension, nats, raw observation units.
    pub nats_per_dim: f64,
    /// Transitions averaged over (observations, for [`NllEstimator::SequenceIwae`]).
    pub transitions: usize,
}

impl NllEntry {
    /// The TensorBoard tag under `eval/`: `nll_exact`, `nll_iwae_k{k}`, `nll_predictive_k{k}` or
    /// `nll_sequence_iwae_k{k}`.
    pub fn tag(&self) -> String {
        match self.estimator {
            NllEstimator::Exact => "nll_exact".into(),
            NllEstimator::Iwae => format!("nll_iwae_k{}", self.k),
            NllEstimator::Predictive => format!("nll_predictive_k{}", self.k),
            NllEstimator::SequenceIwae => format!("nll_sequence_iwae_k{}", self.k),
        }
    }

    /// A short label for tables.
    pub fn label(&self) -> String {
        match self.estimator {
            NllEstimator::Exact => "exact".into(),
            NllEstimator::Iwae => format!("IWAE k = {}", self.k),
            NllEstimator::Predictive => format!("predictive k = {}", self.k),
            NllEstimator::SequenceIwae => format!("sequence IWAE k = {}", self.k),
        }
    }

    /// Whether it scores the next observation given the past (comparable across models), as
    /// opposed to the whole sequence.
    pub fn scores_next_observation(&self) -> bool {
        self.estimator != NllEstimator::SequenceIwae
    }
}

/// Open-loop error at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonEntry {
    /// Steps predicted without seeing real observations.
    pub horizon: usize,
    /// RMSE averaged over observation dimensions (root of the mean squared error over all).
    pub rmse: f64,
    /// RMSE per observation dimension.
    pub rmse_per_dim: Vec<f64>,
    /// Windows that reached this horizon inside their episode.
    pub windows: usize,
}

/// The one-step energy score of the model's samples (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyScoreEntry {
    /// Steps predicted (1).
    pub horizon: usize,
    /// Samples drawn from the model per transition.
    pub samples: usize,
    /// Held-out transitions averaged over.
    pub transitions: usize,
    /// Mean energy score, raw observation units (Euclidean over the observation; lower is
    /// better; NaN when a model sample was not finite).
    pub mean: f64,
}

/// The model's next-observation samples against the true law's at the same `(s, a)` (see the
/// module docs); means over the held-out transitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthScores {
    /// The environment.
    pub env: String,
    /// Samples of each side per transition.
    pub samples: usize,
    /// Transitions averaged over.
    pub transitions: usize,
    /// Mean unbiased MMD² (RBF kernel, median-heuristic bandwidth); 0 for a perfect model, up to
    /// sampling noise (it can be slightly negative).
    pub mmd2: f64,
    /// Mean energy distance (0 for a perfect model, up to sampling noise).
    pub energy_distance: f64,
    /// Transitions with two or more modes, over which the coverage is averaged.
    pub multimodal_transitions: usize,
    /// Mean fraction of the true modes the model covers.
    pub mode_coverage: f64,
    /// Mean true weight of the covered modes.
    pub weighted_mode_coverage: f64,
    /// The same coverage for a second set of the true law's own samples: what a perfect model
    /// scores with this many samples.
    pub truth_mode_coverage: f64,
    /// Mean fraction of the model's samples near no mode.
    pub outside_fraction: f64,
    /// The same fraction for the true law's own second sample set.
    pub truth_outside_fraction: f64,
}

/// The metrics of one evaluation, as printed by `wm eval` and written to `eval.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The model kind.
    pub model: String,
    /// Gradient updates the model had when evaluated.
    pub update: u64,
    /// Held-out transitions available.
    pub transitions: usize,
    /// Likelihood estimates.
    pub nll: Vec<NllEntry>,
    /// Why a likelihood is missing, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nll_note: Option<String>,
    /// One-step RMSE per observation dimension (horizon 1 from every held-out step).
    pub one_step_rmse_per_dim: Vec<f64>,
    /// The energy score at horizon 1 (absent when `max_nll_transitions` is 0, and in reports
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_score: Option<EnergyScoreEntry>,
    /// The energy score at horizon [`LONG_ENERGY_HORIZON`] (absent when no window reaches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_score_long: Option<EnergyScoreEntry>,
    /// Scores against the true transition law (stochastic environments only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth: Option<TruthScores>,
    /// Open-loop RMSE by horizon.
    pub open_loop: Vec<HorizonEntry>,
    /// RMSE of the predicted reward (one step).
    pub reward_rmse: f64,
    /// Fraction of transitions whose termination is predicted right (continue probability < 0.5).
    pub termination_accuracy: f64,
    /// Fraction of terminal transitions predicted terminal (NaN when there were none).
    pub termination_recall: f64,
    /// Mean return of the acting policy's evaluation episodes (when `eval.policy_episodes` > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_return: Option<f64>,
    /// Mean length of those episodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_episode_length: Option<f64>,
}

/// Evaluates `model` (already without autodiff) on the held-out episodes of `buffer` with the
/// protocol of the module docs.
pub fn evaluate_any(
    model: &AnyModel,
    buffer: &ReplayBuffer,
    options: &EvalOptions,
    update: u64,
    device: &wm_backend::Device,
) -> EvalReport {
    let mut report = model.visit_eval(Evaluate {
        buffer,
        options,
        device,
    });
    report.model = model.kind().to_string();
    report.update = update;
    report
}

struct Evaluate<'a> {
    buffer: &'a ReplayBuffer,
    options: &'a EvalOptions,
    device: &'a wm_backend::Device,
}

impl EvalModelVisitor for Evaluate<'_> {
    type Output = EvalReport;
    fn visit<M: EvalModel>(self, model: &M) -> EvalReport {
        evaluate(model, self.buffer, self.options, self.device)
    }
}

/// Evaluates any [`EvalModel`]; the report's `model` and `update` are left for the caller.
pub fn evaluate<M: EvalModel>(
    model: &M,
    buffer: &ReplayBuffer,
    options: &EvalOptions,
    device: &wm_backend::Device,
) -> EvalReport {
    let mut ks = options.iwae_samples.clone();
    ks.retain(|&k| k > 0);
    ks.sort_unstable();
    ks.dedup();
    let nll = if ks.is_empty() || options.max_nll_transitions == 0 {
        Default::default()
    } else {
        model.held_out_nll(buffer, options.max_nll_transitions, &ks, device)
    };
    let o = buffer.spec().obs_dim;
    let episodes: Vec<&Episode> = buffer.episodes().filter(|e| !e.is_empty()).collect();
    let max_horizon = options.horizons.iter().copied().max().unwrap_or(0);
    let mut one_step = HorizonErrors::new(o, 1);
    let mut reward = MeanSquare::default();
    let mut termination = TerminationCounts::default();
    let mut open_loop = HorizonErrors::new(o, max_horizon);
    let windows = open_loop_windows(&episodes, options.max_open_loop_windows);
    let (mut energy_left, mut energy_sum, mut energy_count) =
        (options.max_nll_transitions, 0.0f64, 0usize);
    // The multi-step energy score's windows: those that reach its horizon, thinned evenly.
    let long_windows: Vec<(usize, usize)> = {
        let reaching: Vec<(usize, usize)> = windows
            .iter()
            .copied()
            .filter(|&(e, t0)| t0 + LONG_ENERGY_HORIZON <= episodes[e].len())
            .collect();
        let stride = reaching.len().div_ceil(MAX_LONG_ENERGY_WINDOWS).max(1);
        if options.max_nll_transitions == 0 {
            Vec::new()
        } else {
            reaching.into_iter().step_by(stride).collect()
        }
    };
    let (mut long_sum, mut long_count) = (0.0f64, 0usize);
    let mut truth_sums = TruthSums::default();
    let mut truth_rng = ChaCha8Rng::seed_from_u64(TRUTH_SEED);
    let spec = model.action_spec().clone();
    let a = spec.raw_width();
    for (first, count) in filter_chunks(&episodes) {
        let chunk = &episodes[first..first + count];
        let steps = chunk.iter().map(|e| e.len()).max().unwrap_or(1);
        let states = filtered_states(model, chunk, steps, device);
        // Horizon 1 from every step.
        let every: Vec<(usize, usize)> = chunk
            .iter()
            .enumerate()
            .flat_map(|(e, episode)| (0..episode.len()).map(move |t| (e, t)))
            .collect();
        imagine_windows(
            model,
            &states,
            chunk,
            steps,
            &every,
            1,
            device,
            |episode, t0, _, obs, predicted_reward, cont| {
                one_step.add(1, obs, episode.observation(o, t0 + 1));
                reward.add(predicted_reward, episode.rewards[t0]);
                termination.add(episode.terminated && t0 + 1 == episode.len(), cont < 0.5);
            },
        );
        // The energy score on the first transitions, in episode order.
        let take = every.len().min(energy_left);
        if take > 0 {
            sample_windows(
                model,
                &states,
                chunk,
                steps,
                &every[..take],
                ENERGY_SCORE_SAMPLES,
                1,
                device,
                |episode, t0, samples| {
                    let rows: Vec<Vec<f32>> = samples.chunks(o).map(<[f32]>::to_vec).collect();
                    energy_sum +=
                        energy_score(&rows, episode.observation(o, t0 + 1)).unwrap_or(f64::NAN);
                    energy_count += 1;
                    if let Some(truth) = &options.truth {
                        let action = env_action(&spec, episode.action(a, t0));
                        let obs = episode.observation(o, t0);
                        truth_sums.add(&*truth.law, obs, &action, &rows, &mut truth_rng);
                    }
                },
            );
            energy_left -= take;
        }
        // The multi-step energy score from this chunk's share of its windows.
        let mine: Vec<(usize, usize)> = long_windows
            .iter()
            .filter(|(e, _)| (first..first + count).contains(e))
            .map(|&(e, t0)| (e - first, t0))
            .collect();
        sample_windows(
            model,
            &states,
            chunk,
            steps,
            &mine,
            ENERGY_SCORE_SAMPLES,
            LONG_ENERGY_HORIZON,
            device,
            |episode, t0, samples| {
                let rows: Vec<Vec<f32>> = samples.chunks(o).map(<[f32]>::to_vec).collect();
                let real = episode.observation(o, t0 + LONG_ENERGY_HORIZON);
                long_sum += energy_score(&rows, real).unwrap_or(f64::NAN);
                long_count += 1;
            },
        );
        // Open loop from the strided windows of these episodes.
        if max_horizon > 0 {
            let mine: Vec<(usize, usize)> = windows
                .iter()
                .filter(|(e, _)| (first..first + count).contains(e))
                .map(|&(e, t0)| (e - first, t0))
                .collect();
            imagine_windows(
                model,
                &states,
                chunk,
                steps,
                &mine,
                max_horizon,
                device,
                |episode, t0, h, obs, _, _| {
                    open_loop.add(h, obs, episode.observation(o, t0 + h));
                },
            );
        }
    }
    EvalReport {
        model: String::new(),
        update: 0,
        transitions: buffer.n_transitions(),
        nll: nll.entries,
        nll_note: nll.note,
        one_step_rmse_per_dim: one_step
            .entry(1)
            .map(|e| e.rmse_per_dim)
            .unwrap_or_default(),
        energy_score: (energy_count > 0).then(|| EnergyScoreEntry {
            horizon: 1,
            samples: ENERGY_SCORE_SAMPLES,
            transitions: energy_count,
            mean: energy_sum / energy_count as f64,
        }),
        energy_score_long: (long_count > 0).then(|| EnergyScoreEntry {
            horizon: LONG_ENERGY_HORIZON,
            samples: ENERGY_SCORE_SAMPLES,
            transitions: long_count,
            mean: long_sum / long_count as f64,
        }),
        truth: options
            .truth
            .as_ref()
            .and_then(|truth| truth_sums.finish(&truth.env, ENERGY_SCORE_SAMPLES)),
        open_loop: options
            .horizons
            .iter()
            .filter_map(|&h| open_loop.entry(h))
            .collect(),
        reward_rmse: reward.rmse(),
        termination_accuracy: termination.accuracy(),
        termination_recall: termination.recall(),
        policy_return: None,
        policy_episode_length: None,
    }
}

/// `(episode, t0)` every [`OPEN_LOOP_STRIDE`] steps of every episode, thinned evenly to at most
/// `max_windows`.
fn open_loop_windows(episodes: &[&Episode], max_windows: usize) -> Vec<(usize, usize)> {
    let mut windows: Vec<(usize, usize)> = episodes
        .iter()
        .enumerate()
        .flat_map(|(e, episode)| {
            (0..episode.len())
                .step_by(OPEN_LOOP_STRIDE)
                .map(move |t0| (e, t0))
        })
        .collect();
    if windows.len() > max_windows {
        let stride = windows.len().div_ceil(max_windows.max(1));
        windows = windows.into_iter().step_by(stride).collect();
    }
    windows
}

/// Consecutive runs of episodes `(first, count)` whose padded histories fit in [`FILTER_ROWS`].
fn filter_chunks(episodes: &[&Episode]) -> Vec<(usize, usize)> {
    let mut chunks = Vec::new();
    let (mut first, mut longest) = (0, 0);
    for (i, episode) in episodes.iter().enumerate() {
        let longer = longest.max(episode.len());
        if i > first && (i - first + 1) * longer > FILTER_ROWS {
            chunks.push((first, i - first));
            first = i;
            longest = episode.len();
        } else {
            longest = longer;
        }
    }
    if first < episodes.len() {
        chunks.push((first, episodes.len() - first));
    }
    chunks
}

/// The history of episodes as a [`Context`]: observations `o_0..o_{steps-1}` (zeros past an
/// episode's end), the action that led to each (zeros at `t = 0` and past the end), `is_first`
/// at `t = 0`.
fn history_context(
    episodes: &[&Episode],
    steps: usize,
    o: usize,
    a: usize,
    device: &wm_backend::Device,
) -> Context {
    let b = episodes.len();
    let (mut obs, mut action, mut first) = (
        vec![0.0f32; b * steps * o],
        vec![0.0f32; b * steps * a],
        vec![0.0f32; b * steps],
    );
    for (row, episode) in episodes.iter().enumerate() {
        first[row * steps] = 1.0;
        for t in 0..steps.min(episode.len() + 1) {
            obs[(row * steps + t) * o..(row * steps + t + 1) * o]
                .copy_from_slice(episode.observation(o, t));
            if t > 0 {
                action[(row * steps + t) * a..(row * steps + t + 1) * a]
                    .copy_from_slice(episode.action(a, t - 1));
            }
        }
    }
    Context::with_history(
        Tensor::from_data(TensorData::new(obs, [b, steps, o]), device),
        Tensor::from_data(TensorData::new(action, [b, steps, a]), device),
        Tensor::from_data(TensorData::new(first, [b, steps]), device),
    )
}

/// The filtered state at every step `t < steps` of each episode, row `e * steps + t`.
fn filtered_states<M: EvalModel>(
    model: &M,
    episodes: &[&Episode],
    steps: usize,
    device: &wm_backend::Device,
) -> M::State {
    let (o, a) = (model.obs_dim(), model.action_spec().raw_width());
    model.start_every_step(&history_context(episodes, steps, o, a, device), false)
}

/// Imagines `horizon` steps from each window `(episode, t0)` (its filtered state in `states`)
/// under the episode's actions and calls `score(episode, t0, h, predicted obs, reward,
/// continue probability)` for every step `h` (1-based) that stays inside the episode.
#[allow(clippy::too_many_arguments)]
fn imagine_windows<M: EvalModel>(
    model: &M,
    states: &M::State,
    episodes: &[&Episode],
    steps: usize,
    windows: &[(usize, usize)],
    horizon: usize,
    device: &wm_backend::Device,
    mut score: impl FnMut(&Episode, usize, usize, &[f32], f32, f32),
) {
    let (o, a) = (model.obs_dim(), model.action_spec().raw_width());
    for chunk in windows.chunks(WINDOW_CHUNK) {
        let rows: Vec<usize> = chunk.iter().map(|&(e, t0)| e * steps + t0).collect();
        let start = model.select_rows(states, &rows);
        // Past an episode's end the last action is repeated (those steps are not scored).
        let actions: Vec<f32> = chunk
            .iter()
            .flat_map(|&(e, t0)| {
                (0..horizon).flat_map(move |h| {
                    episodes[e]
                        .action(a, (t0 + h).min(episodes[e].len() - 1))
                        .to_vec()
                })
            })
            .collect();
        let actions =
            Tensor::<3>::from_data(TensorData::new(actions, [chunk.len(), horizon, a]), device);
        let rollout = WorldModel::imagine(model, &start, ImagineActions::Sequence(actions), false);
        let obs = host(rollout.obs);
        let (reward, cont) = (host(rollout.reward), host(rollout.continue_prob));
        for (row, &(e, t0)) in chunk.iter().enumerate() {
            for h in 1..=horizon.min(episodes[e].len() - t0) {
                let index = row * horizon + h - 1;
                score(
                    episodes[e],
                    t0,
                    h,
                    &obs[index * o..(index + 1) * o],
                    reward[index],
                    cont[index],
                );
            }
        }
    }
}

/// From each window `(episode, t0)`, draws `samples` sampled rollouts of `horizon` steps under
/// the episode's true actions (every window must reach `t0 + horizon` inside its episode) and
/// calls `score(episode, t0, observations at the last step [samples * O])`.
#[allow(clippy::too_many_arguments)]
fn sample_windows<M: EvalModel>(
    model: &M,
    states: &M::State,
    episodes: &[&Episode],
    steps: usize,
    windows: &[(usize, usize)],
    samples: usize,
    horizon: usize,
    device: &wm_backend::Device,
    mut score: impl FnMut(&Episode, usize, &[f32]),
) {
    let (o, a) = (model.obs_dim(), model.action_spec().raw_width());
    for chunk in windows.chunks((WINDOW_CHUNK / samples).max(1)) {
        let rows: Vec<usize> = chunk
            .iter()
            .flat_map(|&(e, t0)| std::iter::repeat_n(e * steps + t0, samples))
            .collect();
        let start = model.select_rows(states, &rows);
        let actions: Vec<f32> = chunk
            .iter()
            .flat_map(|&(e, t0)| {
                let window: Vec<f32> = (t0..t0 + horizon)
                    .flat_map(|t| episodes[e].action(a, t).iter().copied())
                    .collect();
                window.repeat(samples)
            })
            .collect();
        let actions =
            Tensor::<3>::from_data(TensorData::new(actions, [rows.len(), horizon, a]), device);
        let rollout = WorldModel::imagine(model, &start, ImagineActions::Sequence(actions), true);
        // [rows, horizon, O]: the last step of row r starts at (r * horizon + horizon - 1) * O.
        let obs = host(rollout.obs);
        for (i, &(e, t0)) in chunk.iter().enumerate() {
            let last: Vec<f32> = (i * samples..(i + 1) * samples)
                .flat_map(|r| {
                    let at = (r * horizon + horizon - 1) * o;
                    obs[at..at + o].iter().copied()
                })
                .collect();
            score(episodes[e], t0, &last);
        }
    }
}

/// The raw action row `values` as an environment action of `spec`.
fn env_action(spec: &wm_models::ActionSpec, values: &[f32]) -> Action {
    match spec {
        wm_models::ActionSpec::Discrete { .. } => Action::Discrete(values[0].max(0.0) as usize),
        wm_models::ActionSpec::Continuous { .. } => Action::Continuous(values.to_vec()),
    }
}

/// Running sums of [`TruthScores`].
#[derive(Default)]
struct TruthSums {
    transitions: usize,
    mmd2: f64,
    energy_distance: f64,
    multimodal: usize,
    coverage: f64,
    weighted_coverage: f64,
    truth_coverage: f64,
    outside: f64,
    truth_outside: f64,
}

impl TruthSums {
    /// Scores the model's `model_rows` at `(obs, action)` against the law's samples.
    fn add(
        &mut self,
        law: &dyn StochasticTransition,
        obs: &[f32],
        action: &Action,
        model_rows: &[Vec<f32>],
        rng: &mut ChaCha8Rng,
    ) {
        let draw = |rng: &mut ChaCha8Rng| -> Option<Vec<Vec<f32>>> {
            (0..model_rows.len())
                .map(|_| law.sample_next(obs, action, rng).ok())
                .collect()
        };
        let (Some(truth), Some(reference)) = (draw(rng), draw(rng)) else {
            return;
        };
        let nan = f64::NAN;
        self.transitions += 1;
        self.mmd2 += mmd2_median_heuristic(model_rows, &truth).map_or(nan, |(m, _)| m);
        self.energy_distance += energy_distance(model_rows, &truth).unwrap_or(nan);
        let Ok(modes) = law.modes(obs, action) else {
            return;
        };
        let mut min_gap = f64::INFINITY;
        for (i, first) in modes.iter().enumerate() {
            for second in &modes[i + 1..] {
                let gap: f64 = first
                    .center
                    .iter()
                    .zip(&second.center)
                    .map(|(x, y)| f64::from(x - y).powi(2))
                    .sum::<f64>()
                    .sqrt();
                min_gap = min_gap.min(gap);
            }
        }
        if modes.len() < 2 || !(min_gap.is_finite() && min_gap > 0.0) {
            return;
        }
        let radius = MODE_RADIUS_FRACTION * min_gap;
        let (Ok(model), Ok(truth)) = (
            mode_coverage(model_rows, &modes, radius, MODE_MIN_FRACTION),
            mode_coverage(&reference, &modes, radius, MODE_MIN_FRACTION),
        ) else {
            self.coverage += nan;
            return;
        };
        self.multimodal += 1;
        self.coverage += model.coverage;
        self.weighted_coverage += model.weighted_coverage;
        self.truth_coverage += truth.coverage;
        self.outside += model.outside_fraction;
        self.truth_outside += truth.outside_fraction;
    }

    fn finish(self, env: &str, samples: usize) -> Option<TruthScores> {
        (self.transitions > 0).then(|| {
            let n = self.transitions as f64;
            let m = (self.multimodal as f64).max(1.0);
            let mean_or_nan = |sum: f64| {
                if self.multimodal > 0 {
                    sum / m
                } else {
                    f64::NAN
                }
            };
            TruthScores {
                env: env.to_string(),
                samples,
                transitions: self.transitions,
                mmd2: self.mmd2 / n,
                energy_distance: self.energy_distance / n,
                multimodal_transitions: self.multimodal,
                mode_coverage: mean_or_nan(self.coverage),
                weighted_mode_coverage: mean_or_nan(self.weighted_coverage),
                truth_mode_coverage: mean_or_nan(self.truth_coverage),
                outside_fraction: mean_or_nan(self.outside),
                truth_outside_fraction: mean_or_nan(self.truth_outside),
            }
        })
    }
}

fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("model outputs should be f32")
}

/// Shows `model` the first [`CONTEXT_STEPS`] observations of each episode (the RSSM filters
/// them with its posterior modes; a one-step model starts from the last one) and imagines
/// `horizon` steps under the episodes' true actions: `(obs [B*H*O], reward [B*H], continue
/// [B*H])`, flat row-major. `sample`: draw from the model (`sample_next`, the RSSM's prior)
/// instead of its central prediction. Past an episode's end the last action is repeated. For
/// plots; the metrics use [`evaluate_any`]'s protocol.
///
/// # Panics
/// If an episode has fewer than `CONTEXT_STEPS` steps or `horizon` is 0.
pub fn imagine_from_context(
    model: &AnyModel,
    episodes: &[&Episode],
    horizon: usize,
    o: usize,
    a: usize,
    sample: bool,
    device: &wm_backend::Device,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    struct FromContext<'a> {
        episodes: &'a [&'a Episode],
        horizon: usize,
        o: usize,
        a: usize,
        sample: bool,
        device: &'a wm_backend::Device,
    }
    impl EvalModelVisitor for FromContext<'_> {
        type Output = (Vec<f32>, Vec<f32>, Vec<f32>);
        fn visit<M: EvalModel>(self, model: &M) -> Self::Output {
            let Self {
                episodes,
                horizon,
                o,
                a,
                sample,
                device,
            } = self;
            assert!(
                episodes.iter().all(|e| e.len() >= CONTEXT_STEPS),
                "every episode needs {CONTEXT_STEPS} steps"
            );
            let start = model.start(
                &history_context(episodes, CONTEXT_STEPS, o, a, device),
                false,
            );
            let first = CONTEXT_STEPS - 1;
            let actions: Vec<f32> = episodes
                .iter()
                .flat_map(|e| {
                    (0..horizon)
                        .flat_map(move |h| e.action(a, (first + h).min(e.len() - 1)).to_vec())
                })
                .collect();
            let actions = Tensor::<3>::from_data(
                TensorData::new(actions, [episodes.len(), horizon, a]),
                device,
            );
            let rollout =
                WorldModel::imagine(model, &start, ImagineActions::Sequence(actions), sample);
            (
                host(rollout.obs),
                host(rollout.reward),
                host(rollout.continue_prob),
            )
        }
    }
    model.visit_eval(FromContext {
        episodes,
        horizon,
        o,
        a,
        sample,
        device,
    })
}

impl EvalReport {
    /// The NLL of the next observation given the past with `k` samples: the exact entry (any
    /// `k`), or the IWAE or predictive entry with this `k`.
    pub fn next_observation_nll(&self, k: usize) -> Option<&NllEntry> {
        self.nll.iter().find(|e| {
            e.estimator == NllEstimator::Exact || (e.scores_next_observation() && e.k == k)
        })
    }

    /// The report as a plain-text table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "model {} after {} updates, {} held-out transitions",
            self.model, self.update, self.transitions
        );
        let _ = writeln!(
            out,
            "held-out NLL, nats per dimension in raw observation units (lower is better)"
        );
        for entry in &self.nll {
            let what = if entry.estimator == NllEstimator::SequenceIwae {
                "observations"
            } else {
                "transitions"
            };
            let _ = writeln!(
                out,
                "  {:<22} {:>9.4}   ({} {what})",
                entry.label(),
                entry.nats_per_dim,
                entry.transitions
            );
        }
        if let Some(note) = &self.nll_note {
            let _ = writeln!(out, "  {note}");
        }
        let dims: Vec<String> = self
            .one_step_rmse_per_dim
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect();
        let _ = writeln!(out, "one-step RMSE per dimension: [{}]", dims.join(", "));
        for entry in [&self.energy_score, &self.energy_score_long]
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "energy score h = {}, raw units (lower is better): {:.4}   ({} samples x {} transitions)",
                entry.horizon, entry.mean, entry.samples, entry.transitions
            );
        }
        if let Some(truth) = &self.truth {
            let _ = writeln!(
                out,
                "against the true law of {} ({} samples each, {} transitions): MMD² {:.5}, energy distance {:.5}",
                truth.env, truth.samples, truth.transitions, truth.mmd2, truth.energy_distance
            );
            let _ = writeln!(
                out,
                "  mode coverage {:.3} (weighted {:.3}; the true law's own samples: {:.3}), samples near no mode {:.3} (the law's: {:.3})   ({} multimodal transitions)",
                truth.mode_coverage,
                truth.weighted_mode_coverage,
                truth.truth_mode_coverage,
                truth.outside_fraction,
                truth.truth_outside_fraction,
                truth.multimodal_transitions
            );
        }
        let _ = writeln!(
            out,
            "open-loop RMSE (mean over dimensions; filtered from the episode start, then imagined)"
        );
        for entry in &self.open_loop {
            let _ = writeln!(
                out,
                "  h = {:<4} {:>9.4}   ({} windows)",
                entry.horizon, entry.rmse, entry.windows
            );
        }
        let _ = writeln!(out, "reward RMSE: {:.4}", self.reward_rmse);
        let _ = writeln!(
            out,
            "termination accuracy: {:.4}, recall on terminal steps: {:.4}",
            self.termination_accuracy, self.termination_recall
        );
        if let (Some(ret), Some(length)) = (self.policy_return, self.policy_episode_length) {
            let _ = writeln!(
                out,
                "acting policy on the real environment: mean return {ret:.1}, mean episode length {length:.1}"
            );
        }
        out
    }

    /// Two reports of the same held-out episodes side by side (`wm eval --compare`): the NLL of
    /// the next observation with each `k` (exact, IWAE or the RSSM's predictive, whichever the
    /// model has), the RSSM's sequence bound, the one-step metrics and the open-loop RMSE.
    pub fn compare_table(&self, other: &EvalReport) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let name = |r: &EvalReport| format!("{} ({})", r.model, r.update);
        let _ = writeln!(
            out,
            "{:<34} {:>26} {:>26}",
            "metric",
            name(self),
            name(other)
        );
        let cell = |entry: Option<&NllEntry>| match entry {
            Some(e) => format!("{:.4} ({})", e.nats_per_dim, e.label()),
            None => "-".to_string(),
        };
        let mut ks: Vec<usize> = self
            .nll
            .iter()
            .chain(&other.nll)
            .filter(|e| e.estimator != NllEstimator::Exact)
            .map(|e| e.k)
            .collect();
        ks.sort_unstable();
        ks.dedup();
        if ks.is_empty() && (!self.nll.is_empty() || !other.nll.is_empty()) {
            ks.push(1);
        }
        for &k in &ks {
            let _ = writeln!(
                out,
                "{:<34} {:>26} {:>26}",
                format!("NLL next observation, k = {k}"),
                cell(self.next_observation_nll(k)),
                cell(other.next_observation_nll(k))
            );
        }
        for &k in &ks {
            let sequence = |r: &EvalReport| {
                r.nll
                    .iter()
                    .find(|e| e.estimator == NllEstimator::SequenceIwae && e.k == k)
                    .map(|e| format!("{:.4}", e.nats_per_dim))
                    .unwrap_or_else(|| "-".into())
            };
            let (a, b) = (sequence(self), sequence(other));
            if a != "-" || b != "-" {
                let _ = writeln!(
                    out,
                    "{:<34} {:>26} {:>26}",
                    format!("NLL sequence bound, k = {k}"),
                    a,
                    b
                );
            }
        }
        let mean_rmse = |r: &EvalReport| {
            let n = r.one_step_rmse_per_dim.len().max(1) as f64;
            (r.one_step_rmse_per_dim.iter().map(|v| v * v).sum::<f64>() / n).sqrt()
        };
        let _ = writeln!(
            out,
            "{:<34} {:>26.4} {:>26.4}",
            "one-step RMSE",
            mean_rmse(self),
            mean_rmse(other)
        );
        let energy = |entry: &Option<EnergyScoreEntry>| {
            entry
                .as_ref()
                .map(|e| format!("{:.4}", e.mean))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            out,
            "{:<34} {:>26} {:>26}",
            "energy score h = 1",
            energy(&self.energy_score),
            energy(&other.energy_score)
        );
        let _ = writeln!(
            out,
            "{:<34} {:>26} {:>26}",
            format!("energy score h = {LONG_ENERGY_HORIZON}"),
            energy(&self.energy_score_long),
            energy(&other.energy_score_long)
        );
        if self.truth.is_some() || other.truth.is_some() {
            let truth = |r: &EvalReport, f: fn(&TruthScores) -> f64| {
                r.truth
                    .as_ref()
                    .map(|t| format!("{:.4}", f(t)))
                    .unwrap_or_else(|| "-".into())
            };
            type Row = (&'static str, fn(&TruthScores) -> f64);
            let rows: [Row; 4] = [
                ("MMD² to the true law, h = 1", |t| t.mmd2),
                ("energy distance to the law, h = 1", |t| t.energy_distance),
                ("mode coverage, h = 1", |t| t.mode_coverage),
                ("samples near no mode, h = 1", |t| t.outside_fraction),
            ];
            for (label, f) in rows {
                let _ = writeln!(
                    out,
                    "{:<34} {:>26} {:>26}",
                    label,
                    truth(self, f),
                    truth(other, f)
                );
            }
        }
        for entry in &self.open_loop {
            let theirs = other
                .open_loop
                .iter()
                .find(|e| e.horizon == entry.horizon)
                .map(|e| format!("{:.4}", e.rmse))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<34} {:>26.4} {:>26}",
                format!(
                    "open-loop RMSE h = {} ({} windows)",
                    entry.horizon, entry.windows
                ),
                entry.rmse,
                theirs
            );
        }
        let _ = writeln!(
            out,
            "{:<34} {:>26.4} {:>26.4}",
            "reward RMSE", self.reward_rmse, other.reward_rmse
        );
        let _ = writeln!(
            out,
            "{:<34} {:>26.4} {:>26.4}",
            "termination accuracy", self.termination_accuracy, other.termination_accuracy
        );
        let _ = writeln!(
            out,
            "{:<34} {:>26.4} {:>26.4}",
            "termination recall", self.termination_recall, other.termination_recall
        );
        for (r, notes) in [(self, &self.nll_note), (other, &other.nll_note)] {
            if let Some(note) = notes {
                let _ = writeln!(out, "{}: {note}", r.model);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{collect_episodes, model_spec, replay_spec};
    use crate::eval_model::HeldOutNll;
    use crate::model::ModelConfig;
    use wm_models::{
        ActionSpec, CvaeConfig, DeterministicMlpConfig, GaussianMlpConfig, Normalizer,
    };
    use wm_rssm::RssmConfig;

    fn held_out(seed: u64, steps: usize) -> (ReplayBuffer, wm_models::ModelSpec) {
        let mut env = wm_envs::make("pendulum").expect("pendulum");
        let mut buffer = ReplayBuffer::new(replay_spec(env.as_ref()), 10_000).expect("buffer");
        collect_episodes(env.as_mut(), seed, steps, &mut buffer).expect("collect");
        (buffer, model_spec(env.as_ref()))
    }

    fn options(ks: Vec<usize>) -> EvalOptions {
        EvalOptions {
            iwae_samples: ks,
            max_nll_transitions: 50,
            horizons: vec![1, 5, 20],
            max_open_loop_windows: 4096,
            truth: None,
        }
    }

    /// Predicts that nothing changes: `o_{t0+h} = o_t0`, reward 0, never terminal.
    struct Persist {
        action: ActionSpec,
        obs_dim: usize,
        /// Added to every predicted observation when sampling (`sample = true`).
        sample_shift: f32,
    }

    impl WorldModel for Persist {
        type State = Tensor<2>;
        fn obs_dim(&self) -> usize {
            self.obs_dim
        }
        fn action_spec(&self) -> &ActionSpec {
            &self.action
        }
        fn start(&self, context: &Context, _sample: bool) -> Tensor<2> {
            context.obs().clone()
        }
        fn observe_step(
            &self,
            _state: &Tensor<2>,
            _action: Tensor<2>,
            obs: Tensor<2>,
            _sample: bool,
        ) -> Tensor<2> {
            obs
        }
        fn step(
            &self,
            state: &Tensor<2>,
            _action: Tensor<2>,
            sample: bool,
        ) -> (Tensor<2>, wm_imagine::StepPrediction) {
            let (b, device) = (state.dims()[0], state.device());
            let shift = if sample { self.sample_shift } else { 0.0 };
            let prediction = wm_imagine::StepPrediction {
                obs: state.clone() + shift,
                reward: Tensor::zeros([b], &device),
                continue_prob: Tensor::ones([b], &device),
            };
            (state.clone(), prediction)
        }
        fn observation(&self, state: &Tensor<2>) -> Tensor<2> {
            state.clone()
        }
        fn batch_size(&self, state: &Tensor<2>) -> usize {
            state.dims()[0]
        }
        fn repeat(&self, state: &Tensor<2>, times: usize) -> Tensor<2> {
            wm_imagine::repeat_rows(state.clone(), times)
        }
    }

    impl EvalModel for Persist {
        fn select_rows(&self, state: &Tensor<2>, rows: &[usize]) -> Tensor<2> {
            let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let device = state.device();
            state.clone().select(
                0,
                Tensor::from_data(TensorData::new(index, [rows.len()]), &device),
            )
        }
        fn held_out_nll(
            &self,
            _: &ReplayBuffer,
            _: usize,
            _: &[usize],
            _: &wm_backend::Device,
        ) -> HeldOutNll {
            HeldOutNll::default()
        }
    }

    /// The energy score draws samples (`sample = true`) from the state at `t0` under the action
    /// at `t0`, and compares them with `o_{t0+1}` on the first `max_nll_transitions` held-out
    /// transitions in episode order: for a model whose samples are all `o_t0 + 1` (every
    /// dimension shifted by 1) the spread term is 0 and the score is the mean of
    /// `‖o_t0 + 1 − o_{t0+1}‖`, computed here directly from the episodes.
    #[test]
    fn energy_score_compares_samples_of_the_next_observation_with_the_real_one() {
        let device = wm_backend::test_device();
        let (buffer, spec) = held_out(4, 450);
        let o = spec.obs_dim;
        let model = Persist {
            action: spec.action.clone(),
            obs_dim: o,
            sample_shift: 1.0,
        };
        let report = evaluate(&model, &buffer, &options(vec![1]), &device);
        let entry = report
            .energy_score
            .clone()
            .expect("max_nll_transitions > 0");
        assert_eq!(
            (entry.horizon, entry.samples, entry.transitions),
            (1, 32, 50)
        );
        let episodes: Vec<&Episode> = buffer.episodes().collect();
        let mut expected = 0.0f64;
        let mut n = 0;
        'outer: for episode in &episodes {
            for t0 in 0..episode.len() {
                if n == 50 {
                    break 'outer;
                }
                let (now, next) = (episode.observation(o, t0), episode.observation(o, t0 + 1));
                expected += now
                    .iter()
                    .zip(next)
                    .map(|(x, y)| (f64::from(*x + 1.0) - f64::from(*y)).powi(2))
                    .sum::<f64>()
                    .sqrt();
                n += 1;
            }
        }
        expected /= 50.0;
        assert!(
            (entry.mean - expected).abs() < 1e-4,
            "{} vs {expected}",
            entry.mean
        );
        assert!(report.table().contains("energy score h = 1"));
        let none = evaluate(
            &model,
            &buffer,
            &EvalOptions {
                max_nll_transitions: 0,
                ..options(vec![1])
            },
            &device,
        );
        assert_eq!(none.energy_score, None);
    }

    /// A model whose samples come from a true transition law: `step` with `sample = true` draws
    /// `s' ~ p(· | s, a)` row by row (its state is the observation, like [`Persist`]).
    struct LawSampler {
        action: ActionSpec,
        law: TrueLaw,
        rng: std::cell::RefCell<ChaCha8Rng>,
    }

    impl WorldModel for LawSampler {
        type State = Tensor<2>;
        fn obs_dim(&self) -> usize {
            1
        }
        fn action_spec(&self) -> &ActionSpec {
            &self.action
        }
        fn start(&self, context: &Context, _sample: bool) -> Tensor<2> {
            context.obs().clone()
        }
        fn observe_step(&self, _: &Tensor<2>, _: Tensor<2>, obs: Tensor<2>, _: bool) -> Tensor<2> {
            obs
        }
        fn step(
            &self,
            state: &Tensor<2>,
            action: Tensor<2>,
            _sample: bool,
        ) -> (Tensor<2>, wm_imagine::StepPrediction) {
            let (b, device) = (state.dims()[0], state.device());
            let (obs, actions) = (host(state.clone()), host(action));
            let mut rng = self.rng.borrow_mut();
            let next: Vec<f32> = (0..b)
                .flat_map(|i| {
                    let action = Action::Continuous(vec![actions[i]]);
                    self.law
                        .law
                        .sample_next(&obs[i..i + 1], &action, &mut *rng)
                        .expect("valid row")
                })
                .collect();
            let next = Tensor::<2>::from_data(TensorData::new(next, [b, 1]), &device);
            let prediction = wm_imagine::StepPrediction {
                obs: next.clone(),
                reward: Tensor::zeros([b], &device),
                continue_prob: Tensor::ones([b], &device),
            };
            (next, prediction)
        }
        fn observation(&self, state: &Tensor<2>) -> Tensor<2> {
            state.clone()
        }
        fn batch_size(&self, state: &Tensor<2>) -> usize {
            state.dims()[0]
        }
        fn repeat(&self, state: &Tensor<2>, times: usize) -> Tensor<2> {
            wm_imagine::repeat_rows(state.clone(), times)
        }
    }

    impl EvalModel for LawSampler {
        fn select_rows(&self, state: &Tensor<2>, rows: &[usize]) -> Tensor<2> {
            let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let device = state.device();
            state.clone().select(
                0,
                Tensor::from_data(TensorData::new(index, [rows.len()]), &device),
            )
        }
        fn held_out_nll(
            &self,
            _: &ReplayBuffer,
            _: usize,
            _: &[usize],
            _: &wm_backend::Device,
        ) -> HeldOutNll {
            HeldOutNll::default()
        }
    }

    /// On the bimodal walk (`s' = s + a ± δ + σε`), a model that samples from the true law
    /// scores like the law's own second sample set (MMD² and energy distance near 0, every mode
    /// covered), while a model that predicts no change (all samples at `s`, between the modes
    /// or on one of them) covers at most one of the two modes and is far in MMD² and energy
    /// distance. The scores are reproducible (fixed seed of the true samples).
    #[test]
    fn truth_scores_separate_a_model_that_samples_the_law_from_one_that_does_not() {
        let device = wm_backend::test_device();
        let mut env = wm_envs::make("bimodal_walk").expect("bimodal walk");
        let mut buffer = ReplayBuffer::new(replay_spec(env.as_ref()), 10_000).expect("buffer");
        collect_episodes(env.as_mut(), 7, 300, &mut buffer).expect("collect");
        let spec = model_spec(env.as_ref());
        let law = TrueLaw::of_env("bimodal_walk").expect("a stochastic env");
        let options = EvalOptions {
            max_nll_transitions: 100,
            truth: Some(law.clone()),
            ..options(vec![1])
        };
        let sampler = LawSampler {
            action: spec.action.clone(),
            law,
            rng: std::cell::RefCell::new(ChaCha8Rng::seed_from_u64(3)),
        };
        let persist = Persist {
            action: spec.action.clone(),
            obs_dim: 1,
            sample_shift: 0.0,
        };
        let good = evaluate(&sampler, &buffer, &options, &device)
            .truth
            .expect("truth scores");
        let bad = evaluate(&persist, &buffer, &options, &device)
            .truth
            .expect("truth scores");
        let again = evaluate(&persist, &buffer, &options, &device)
            .truth
            .expect("truth scores");
        assert_eq!(bad, again, "the true samples come from a fixed seed");
        assert_eq!(
            (good.transitions, good.samples),
            (100, ENERGY_SCORE_SAMPLES)
        );
        assert_eq!(good.multimodal_transitions, 100, "{good:?}");
        // Two modes of weight 1/2 each: 32 samples miss one with probability 2^-31.
        assert!(good.truth_mode_coverage > 0.999, "{good:?}");
        assert!(good.mode_coverage > 0.999, "{good:?}");
        assert!(bad.mode_coverage <= 0.5 + 1e-12, "{bad:?}");
        assert!(good.weighted_mode_coverage > 0.999, "{good:?}");
        // The modes are 2δ apart with noise 0.1δ: the law's samples all lie within a quarter of
        // the gap of their mode.
        assert!(good.truth_outside_fraction < 0.01, "{good:?}");
        assert!(good.outside_fraction < 0.01, "{good:?}");
        // Unbiased MMD² of two samples of one law averages 0; a point mass against the law is
        // a fixed positive distance. The energy distance likewise.
        assert!(good.mmd2.abs() < 0.02, "{good:?}");
        assert!(
            bad.mmd2 > 10.0 * good.mmd2.abs().max(0.01),
            "{bad:?} vs {good:?}"
        );
        assert!(
            bad.energy_distance > 5.0 * good.energy_distance.abs().max(0.01),
            "{bad:?} vs {good:?}"
        );
        let table = evaluate(&persist, &buffer, &options, &device).table();
        assert!(
            table.contains("against the true law of bimodal_walk"),
            "{table}"
        );
    }

    /// The multi-step energy score scores the samples at `t0 + 10` against `o_{t0+10}` on the
    /// open-loop windows that reach that far: for a model whose samples are all `o_t0 + 1` (its
    /// state does not move) it is the mean of `‖o_t0 + 1 − o_{t0+10}‖` over those windows.
    #[test]
    fn the_long_energy_score_compares_samples_at_its_horizon_with_the_real_observation() {
        let device = wm_backend::test_device();
        let (buffer, spec) = held_out(4, 450);
        let o = spec.obs_dim;
        let model = Persist {
            action: spec.action.clone(),
            obs_dim: o,
            sample_shift: 1.0,
        };
        let options = options(vec![1]);
        let entry = evaluate(&model, &buffer, &options, &device)
            .energy_score_long
            .expect("windows reach h = 10");
        let episodes: Vec<&Episode> = buffer.episodes().filter(|e| !e.is_empty()).collect();
        let windows: Vec<(usize, usize)> =
            open_loop_windows(&episodes, options.max_open_loop_windows)
                .into_iter()
                .filter(|&(e, t0)| t0 + LONG_ENERGY_HORIZON <= episodes[e].len())
                .collect();
        assert!(
            windows.len() <= MAX_LONG_ENERGY_WINDOWS,
            "{}",
            windows.len()
        );
        let expected: f64 = windows
            .iter()
            .map(|&(e, t0)| {
                let now = episodes[e].observation(o, t0);
                let later = episodes[e].observation(o, t0 + LONG_ENERGY_HORIZON);
                now.iter()
                    .zip(later)
                    .map(|(x, y)| (f64::from(*x + 1.0) - f64::from(*y)).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .sum::<f64>()
            / windows.len() as f64;
        assert_eq!(
            (entry.horizon, entry.transitions),
            (LONG_ENERGY_HORIZON, windows.len())
        );
        assert!(
            (entry.mean - expected).abs() < 1e-4,
            "{} vs {expected}",
            entry.mean
        );
        assert!(
            evaluate(&model, &buffer, &options, &device)
                .table()
                .contains("energy score h = 10")
        );
    }

    /// The windows are aligned with the real observations: for a model that predicts no change,
    /// the RMSE at horizon h is that of `o_{t0+h} - o_t0` over the windows, computed here
    /// directly from the episodes.
    #[test]
    fn windows_compare_imagined_steps_with_the_right_real_observations() {
        let device = wm_backend::test_device();
        let (buffer, spec) = held_out(3, 450);
        let o = spec.obs_dim;
        let model = Persist {
            action: spec.action.clone(),
            obs_dim: o,
            sample_shift: 0.0,
        };
        let report = evaluate(&model, &buffer, &options(vec![1]), &device);
        let episodes: Vec<&Episode> = buffer.episodes().collect();
        let expected = |h: usize, stride: usize| {
            let (mut squared, mut per_dim, mut n) = (0.0f64, vec![0.0f64; o], 0usize);
            for episode in &episodes {
                for t0 in (0..episode.len())
                    .step_by(stride)
                    .filter(|t0| t0 + h <= episode.len())
                {
                    let (start, end) = (episode.observation(o, t0), episode.observation(o, t0 + h));
                    for (d, sum) in per_dim.iter_mut().enumerate() {
                        let e = f64::from(start[d]) - f64::from(end[d]);
                        squared += e * e;
                        *sum += e * e;
                    }
                    n += 1;
                }
            }
            (
                (squared / (n * o) as f64).sqrt(),
                per_dim
                    .iter()
                    .map(|s| (s / n as f64).sqrt())
                    .collect::<Vec<_>>(),
                n,
            )
        };
        let (_, one_step, n) = expected(1, 1);
        assert_eq!(n, buffer.n_transitions());
        for (got, want) in report.one_step_rmse_per_dim.iter().zip(&one_step) {
            assert!(
                (got - want).abs() < 1e-9,
                "one-step {:?} vs {one_step:?}",
                report.one_step_rmse_per_dim
            );
        }
        for entry in &report.open_loop {
            let (rmse, _, windows) = expected(entry.horizon, OPEN_LOOP_STRIDE);
            assert_eq!(entry.windows, windows, "h = {}", entry.horizon);
            assert!(
                (entry.rmse - rmse).abs() < 1e-9,
                "h = {}: {} vs {rmse}",
                entry.horizon,
                entry.rmse
            );
        }
        assert_eq!(
            report
                .open_loop
                .iter()
                .map(|e| e.horizon)
                .collect::<Vec<_>>(),
            [1, 5, 20]
        );
        let rewards: Vec<f64> = episodes
            .iter()
            .flat_map(|e| e.rewards.iter().map(|&r| f64::from(r)))
            .collect();
        let reward_rmse =
            (rewards.iter().map(|r| r * r).sum::<f64>() / rewards.len() as f64).sqrt();
        assert!(
            (report.reward_rmse - reward_rmse).abs() < 1e-9,
            "{} vs {reward_rmse}",
            report.reward_rmse
        );
        // Pendulum never terminates and the model never says so.
        assert_eq!(report.termination_accuracy, 1.0);
        assert!(report.termination_recall.is_nan());
    }

    /// Every model class is scored on the same windows and, for the likelihood, on the same
    /// transitions; exact models give one entry, the deterministic MLP none before its residual
    /// std is fitted (with a note), the RSSM a predictive and a sequence estimate per k.
    #[test]
    fn every_model_class_is_scored_on_the_same_windows_and_transitions() {
        let device = wm_backend::test_device();
        device.seed(4);
        let (buffer, spec) = held_out(5, 300);
        let o = spec.obs_dim;
        let normalizer = Normalizer::identity(o);
        let tiny_rssm = RssmConfig {
            deter: 8,
            hidden: 8,
            encoder_hidden: vec![8],
            decoder_hidden: vec![8],
            head_hidden: vec![8],
            ..RssmConfig::default()
        };
        let configs = [
            ModelConfig::Cvae(CvaeConfig {
                hidden: vec![8],
                ..CvaeConfig::default()
            }),
            ModelConfig::Gaussian(GaussianMlpConfig {
                hidden: vec![8],
                ..GaussianMlpConfig::default()
            }),
            ModelConfig::Deterministic(DeterministicMlpConfig {
                hidden: vec![8],
                ..DeterministicMlpConfig::default()
            }),
            ModelConfig::Rssm(tiny_rssm),
        ];
        let reports: Vec<EvalReport> = configs
            .iter()
            .map(|c| {
                evaluate_any(
                    &c.init(&spec, normalizer.clone(), &device),
                    &buffer,
                    &options(vec![4, 1, 4]),
                    7,
                    &device,
                )
            })
            .collect();
        let windows: Vec<Vec<(usize, usize)>> = reports
            .iter()
            .map(|r| r.open_loop.iter().map(|e| (e.horizon, e.windows)).collect())
            .collect();
        assert!(
            windows.iter().all(|w| w == &windows[0] && w.len() == 3),
            "{windows:?}"
        );
        for report in &reports {
            assert_eq!(
                (report.update, report.one_step_rmse_per_dim.len()),
                (7, o),
                "{report:?}"
            );
            assert!(
                report
                    .one_step_rmse_per_dim
                    .iter()
                    .chain([&report.reward_rmse])
                    .all(|v| v.is_finite()),
                "{report:?}"
            );
            assert!(
                report.nll.iter().all(|e| e.nats_per_dim.is_finite()),
                "{report:?}"
            );
        }
        let summary = |r: &EvalReport| {
            r.nll
                .iter()
                .map(|e| (e.estimator, e.k, e.transitions))
                .collect::<Vec<_>>()
        };
        use NllEstimator::*;
        assert_eq!(summary(&reports[0]), [(Iwae, 1, 50), (Iwae, 4, 50)]);
        assert_eq!(summary(&reports[1]), [(Exact, 1, 50)]);
        assert!(
            reports[2].nll.is_empty()
                && reports[2]
                    .nll_note
                    .as_deref()
                    .is_some_and(|n| n.contains("residual std")),
            "{:?}",
            reports[2]
        );
        // 50 transitions of the first episode: 51 observations for the sequence bound.
        assert_eq!(
            summary(&reports[3]),
            [
                (Predictive, 1, 50),
                (SequenceIwae, 1, 51),
                (Predictive, 4, 50),
                (SequenceIwae, 4, 51)
            ]
        );
        assert_eq!(reports[3].nll[2].tag(), "nll_predictive_k4");
        assert_eq!(reports[1].nll[0].tag(), "nll_exact");
        let compared = reports[3].compare_table(&reports[0]);
        assert!(
            compared.contains("(predictive k = 4)")
                && compared.contains("(IWAE k = 4)")
                && compared.contains("NLL sequence bound, k = 4"),
            "{compared}"
        );

        // With a fitted residual std the deterministic model's likelihood is exact.
        let mut fitted = wm_models::TransitionModelConfig::Deterministic(DeterministicMlpConfig {
            hidden: vec![8],
            ..DeterministicMlpConfig::default()
        })
        .init(&spec, normalizer, &device);
        assert!(fitted.set_residual_std(vec![0.1; o]));
        let report = evaluate_any(
            &AnyModel::Transition(fitted),
            &buffer,
            &options(vec![1]),
            0,
            &device,
        );
        assert_eq!(summary(&report), [(Exact, 1, 50)]);
        assert!(report.nll_note.is_none());
    }
}
