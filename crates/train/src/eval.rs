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

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use wm_imagine::{Context, ImagineActions, WorldModel};
use wm_replay::{Episode, ReplayBuffer};

use crate::eval_model::{EvalModel, EvalModelVisitor};
use crate::metrics::{HorizonErrors, MeanSquare, TerminationCounts};
use crate::model::AnyModel;
use crate::scores::energy_score;

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
            sample_next_windows(
                model,
                &states,
                chunk,
                steps,
                &every[..take],
                ENERGY_SCORE_SAMPLES,
                device,
                |episode, t0, samples| {
                    let rows: Vec<Vec<f32>> = samples.chunks(o).map(<[f32]>::to_vec).collect();
                    energy_sum +=
                        energy_score(&rows, episode.observation(o, t0 + 1)).unwrap_or(f64::NAN);
                    energy_count += 1;
                },
            );
            energy_left -= take;
        }
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

/// Draws `samples` next observations from each window `(episode, t0)` (its filtered state in
/// `states`, repeated) under the episode's action at `t0`, with `sample = true`, and calls
/// `score(episode, t0, samples [samples * O])`.
#[allow(clippy::too_many_arguments)]
fn sample_next_windows<M: EvalModel>(
    model: &M,
    states: &M::State,
    episodes: &[&Episode],
    steps: usize,
    windows: &[(usize, usize)],
    samples: usize,
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
            .flat_map(|&(e, t0)| episodes[e].action(a, t0).repeat(samples))
            .collect();
        let actions = Tensor::<3>::from_data(TensorData::new(actions, [rows.len(), 1, a]), device);
        let rollout = WorldModel::imagine(model, &start, ImagineActions::Sequence(actions), true);
        // [rows, 1, O]: the samples of window i are rows i*samples..(i+1)*samples.
        let obs = host(rollout.obs);
        for (i, &(e, t0)) in chunk.iter().enumerate() {
            score(
                episodes[e],
                t0,
                &obs[i * samples * o..(i + 1) * samples * o],
            );
        }
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
        if let Some(entry) = &self.energy_score {
            let _ = writeln!(
                out,
                "energy score h = 1, raw units (lower is better): {:.4}   ({} samples x {} transitions)",
                entry.mean, entry.samples, entry.transitions
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
        let energy = |r: &EvalReport| {
            r.energy_score
                .as_ref()
                .map(|e| format!("{:.4}", e.mean))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            out,
            "{:<34} {:>26} {:>26}",
            "energy score h = 1",
            energy(self),
            energy(other)
        );
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
