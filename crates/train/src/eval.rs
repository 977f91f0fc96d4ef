//! Held-out evaluation of a transition model: likelihood, one-step and open-loop error, reward
//! and termination prediction.
//!
//! - **NLL** is −log p(s'|s,a) in nats per observation dimension, in raw observation units, so
//!   that every model class is comparable: exact for the Gaussian MLP, the residual-variance
//!   Gaussian for the deterministic MLP, and the importance-weighted bound (IWAE) with k samples
//!   for the cVAE (an upper bound on the NLL that tightens as k grows).
//! - **Open-loop RMSE** at horizon h: from a real start state, the model's `mean_next` is fed
//!   back to itself under the true actions for h steps and compared with the real observation;
//!   start states every `OPEN_LOOP_STRIDE` steps of each held-out episode.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use wm_models::{AnyTransitionModel, TransitionModel};
use wm_replay::{ReplayBuffer, TransitionBatch};

use crate::data::{all_transitions, to_tensors};
use crate::model::AnyModel;

/// Start states of open-loop windows are taken every this many steps of an episode.
pub const OPEN_LOOP_STRIDE: usize = 5;
/// Transitions per likelihood chunk (the cVAE chunks its samples internally).
const NLL_CHUNK: usize = 256;

/// What to measure.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Importance samples for each likelihood estimate (one estimate per entry).
    pub iwae_samples: Vec<usize>,
    /// At most this many held-out transitions for the likelihood.
    pub max_nll_transitions: usize,
    /// Open-loop horizons (empty: skip the open-loop test).
    pub horizons: Vec<usize>,
    /// At most this many open-loop windows.
    pub max_open_loop_windows: usize,
}

/// One likelihood estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NllEntry {
    /// Importance samples (1 for the exact likelihoods of the MLP baselines, which ignore it).
    pub k: usize,
    /// −log p(s'|s,a) per observation dimension, nats.
    pub nats_per_dim: f64,
    /// Transitions averaged over.
    pub transitions: usize,
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
    /// One-step RMSE of `mean_next` per observation dimension.
    pub one_step_rmse_per_dim: Vec<f64>,
    /// Open-loop RMSE by horizon.
    pub open_loop: Vec<HorizonEntry>,
    /// RMSE of the predicted reward (one step).
    pub reward_rmse: f64,
    /// Fraction of transitions whose termination is predicted right (probability > 0.5).
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

/// Evaluates `model` (already without autodiff) on the held-out episodes of `buffer`.
pub fn evaluate(model: &AnyTransitionModel, buffer: &ReplayBuffer, options: &EvalOptions, update: u64, device: &wm_backend::Device) -> EvalReport {
    let data = all_transitions(buffer, usize::MAX);
    let nll_rows = data.batch_size.min(options.max_nll_transitions);
    let nll = options
        .iwae_samples
        .iter()
        .map(|&k| NllEntry { k, nats_per_dim: mean_nll_per_dim(model, &data, nll_rows, k, device), transitions: nll_rows })
        .collect();
    let (one_step_rmse_per_dim, reward_rmse, termination_accuracy, termination_recall) = one_step_metrics(model, &data, device);
    let open_loop = if options.horizons.is_empty() {
        Vec::new()
    } else {
        open_loop_rmse(model, buffer, &options.horizons, options.max_open_loop_windows, device)
    };
    EvalReport {
        model: model.kind().to_string(),
        update,
        transitions: data.batch_size,
        nll,
        one_step_rmse_per_dim,
        open_loop,
        reward_rmse,
        termination_accuracy,
        termination_recall,
        policy_return: None,
        policy_episode_length: None,
    }
}

fn host(tensor: Tensor<1>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().expect("model outputs should be f32")
}

fn host2(tensor: Tensor<2>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().expect("model outputs should be f32")
}

fn mean_nll_per_dim(model: &AnyTransitionModel, data: &TransitionBatch, rows: usize, k: usize, device: &wm_backend::Device) -> f64 {
    let mut total = 0.0f64;
    for start in (0..rows).step_by(NLL_CHUNK) {
        let batch = to_tensors(data, start..(start + NLL_CHUNK).min(rows), device);
        total += host(model.log_likelihood(&batch, k)).iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    -total / (rows.max(1) * data.obs_dim) as f64
}

fn one_step_metrics(model: &AnyTransitionModel, data: &TransitionBatch, device: &wm_backend::Device) -> (Vec<f64>, f64, f64, f64) {
    let o = data.obs_dim;
    let mut squared = vec![0.0f64; o];
    let (mut reward_squared, mut correct, mut terminal, mut terminal_hit) = (0.0f64, 0usize, 0usize, 0usize);
    for start in (0..data.batch_size).step_by(NLL_CHUNK) {
        let end = (start + NLL_CHUNK).min(data.batch_size);
        let batch = to_tensors(data, start..end, device);
        let prediction = model.mean_next(batch.obs.clone(), batch.action.clone());
        let next = host2(prediction.next_obs);
        for (i, value) in next.iter().enumerate() {
            let error = f64::from(*value - data.next_obs[start * o + i]);
            squared[i % o] += error * error;
        }
        let rewards = host(prediction.reward);
        let probabilities = host(prediction.terminated_prob);
        for row in 0..end - start {
            let error = f64::from(rewards[row] - data.rewards[start + row]);
            reward_squared += error * error;
            let actual = data.terminated[start + row] > 0.5;
            let predicted = probabilities[row] > 0.5;
            correct += usize::from(actual == predicted);
            terminal += usize::from(actual);
            terminal_hit += usize::from(actual && predicted);
        }
    }
    let n = data.batch_size.max(1) as f64;
    let rmse = squared.iter().map(|s| (s / n).sqrt()).collect();
    let recall = if terminal == 0 { f64::NAN } else { terminal_hit as f64 / terminal as f64 };
    (rmse, (reward_squared / n).sqrt(), correct as f64 / n, recall)
}

fn open_loop_rmse(
    model: &AnyTransitionModel,
    buffer: &ReplayBuffer,
    horizons: &[usize],
    max_windows: usize,
    device: &wm_backend::Device,
) -> Vec<HorizonEntry> {
    let spec = buffer.spec();
    let (o, a) = (spec.obs_dim, spec.action_width());
    let max_horizon = horizons.iter().copied().max().unwrap_or(0);
    let episodes: Vec<_> = buffer.episodes().collect();
    let mut windows: Vec<(usize, usize)> = episodes
        .iter()
        .enumerate()
        .flat_map(|(e, episode)| (0..episode.len()).step_by(OPEN_LOOP_STRIDE).map(move |t0| (e, t0)))
        .collect();
    if windows.len() > max_windows {
        let stride = windows.len().div_ceil(max_windows);
        windows = windows.into_iter().step_by(stride).collect();
    }
    let w = windows.len();
    let mut squared = vec![vec![0.0f64; o]; max_horizon + 1];
    let mut counts = vec![0usize; max_horizon + 1];
    if w == 0 {
        return Vec::new();
    }
    let start_obs: Vec<f32> = windows.iter().flat_map(|&(e, t0)| episodes[e].observation(o, t0).to_vec()).collect();
    let mut current = Tensor::<2>::from_data(TensorData::new(start_obs, [w, o]), device);
    for h in 0..max_horizon {
        let any_alive = windows.iter().any(|&(e, t0)| t0 + h < episodes[e].len());
        if !any_alive {
            break;
        }
        let actions: Vec<f32> = windows
            .iter()
            .flat_map(|&(e, t0)| {
                let episode = &episodes[e];
                // Past the episode's end the window is dead; any valid action keeps the batch going.
                let t = (t0 + h).min(episode.len() - 1);
                episode.action(a, t).to_vec()
            })
            .collect();
        let action_tensor = Tensor::<2>::from_data(TensorData::new(actions, [w, a]), device);
        current = model.mean_next(current, action_tensor).next_obs;
        let predicted = host2(current.clone());
        for (row, &(e, t0)) in windows.iter().enumerate() {
            if t0 + h < episodes[e].len() {
                let truth = episodes[e].observation(o, t0 + h + 1);
                for d in 0..o {
                    let error = f64::from(predicted[row * o + d] - truth[d]);
                    squared[h + 1][d] += error * error;
                }
                counts[h + 1] += 1;
            }
        }
    }
    horizons
        .iter()
        .filter(|&&h| counts[h] > 0)
        .map(|&h| {
            let n = counts[h] as f64;
            HorizonEntry {
                horizon: h,
                rmse: (squared[h].iter().sum::<f64>() / (n * o as f64)).sqrt(),
                rmse_per_dim: squared[h].iter().map(|s| (s / n).sqrt()).collect(),
                windows: counts[h],
            }
        })
        .collect()
}

impl EvalReport {
    /// The report as a plain-text table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "model {} after {} updates, {} held-out transitions", self.model, self.update, self.transitions);
        let _ = writeln!(out, "held-out NLL, nats per dimension (lower is better)");
        for entry in &self.nll {
            let _ = writeln!(out, "  k = {:<5} {:>9.4}   ({} transitions)", entry.k, entry.nats_per_dim, entry.transitions);
        }
        let dims: Vec<String> = self.one_step_rmse_per_dim.iter().map(|v| format!("{v:.4}")).collect();
        let _ = writeln!(out, "one-step RMSE per dimension: [{}]", dims.join(", "));
        let _ = writeln!(out, "open-loop RMSE (mean over dimensions)");
        for entry in &self.open_loop {
            let _ = writeln!(out, "  h = {:<4} {:>9.4}   ({} windows)", entry.horizon, entry.rmse, entry.windows);
        }
        let _ = writeln!(out, "reward RMSE: {:.4}", self.reward_rmse);
        let _ = writeln!(
            out,
            "termination accuracy: {:.4}, recall on terminal steps: {:.4}",
            self.termination_accuracy, self.termination_recall
        );
        if let (Some(ret), Some(length)) = (self.policy_return, self.policy_episode_length) {
            let _ = writeln!(out, "acting policy on the real environment: mean return {ret:.1}, mean episode length {length:.1}");
        }
        out
    }
}

/// Observations the episode open-loop test lets a model see before it imagines (PlaNet's and
/// Dreamer's video-prediction protocol: observe 5, predict the rest).
pub const CONTEXT_STEPS: usize = 5;

/// The episode open-loop test, the same for every kind of model: for each held-out episode with
/// more than `CONTEXT_STEPS` steps, show the model the first `CONTEXT_STEPS` observations (the
/// RSSM observes them; a one-step model starts from the last one), then imagine the rest of the
/// episode under the true actions (the RSSM's prior mode, a one-step model's `mean_next`) and
/// compare with the real observations. Also returns the reward RMSE and the termination accuracy
/// and recall over all imagined steps.
pub fn episode_open_loop(
    model: &AnyModel,
    buffer: &ReplayBuffer,
    horizons: &[usize],
    max_episodes: usize,
    device: &wm_backend::Device,
) -> (Vec<HorizonEntry>, f64, f64, f64) {
    let spec = buffer.spec();
    let (o, a) = (spec.obs_dim, spec.action_width());
    let episodes: Vec<_> = buffer.episodes().filter(|e| e.len() >= CONTEXT_STEPS).take(max_episodes).collect();
    let max_horizon = horizons.iter().copied().max().unwrap_or(0);
    let b = episodes.len();
    if b == 0 || max_horizon == 0 {
        return (Vec::new(), f64::NAN, f64::NAN, f64::NAN);
    }
    // Imagined step h (1-based) uses the action taken at observation CONTEXT_STEPS - 2 + h and
    // is compared with observation CONTEXT_STEPS - 1 + h.
    let start = CONTEXT_STEPS - 1;
    let horizon = episodes.iter().map(|e| e.len() - start).max().unwrap_or(0).min(max_horizon);
    let (predicted_obs, predicted_reward, predicted_cont) = imagine_from_context(model, &episodes, horizon, o, a, false, device);
    let mut squared = vec![vec![0.0f64; o]; horizon + 1];
    let mut counts = vec![0usize; horizon + 1];
    let (mut reward_squared, mut steps, mut correct, mut terminal, mut terminal_hit) = (0.0f64, 0usize, 0usize, 0usize, 0usize);
    for (row, episode) in episodes.iter().enumerate() {
        for h in 1..=horizon.min(episode.len() - start) {
            let truth = episode.observation(o, start + h);
            let index = row * horizon + h - 1;
            for d in 0..o {
                let error = f64::from(predicted_obs[index * o + d] - truth[d]);
                squared[h][d] += error * error;
            }
            counts[h] += 1;
            let reward_error = f64::from(predicted_reward[index] - episode.rewards[start + h - 1]);
            reward_squared += reward_error * reward_error;
            let actual_terminal = episode.terminated && start + h == episode.len();
            let predicted_terminal = predicted_cont[index] < 0.5;
            steps += 1;
            correct += usize::from(actual_terminal == predicted_terminal);
            terminal += usize::from(actual_terminal);
            terminal_hit += usize::from(actual_terminal && predicted_terminal);
        }
    }
    let entries = horizons
        .iter()
        .filter(|&&h| h <= horizon && counts[h] > 0)
        .map(|&h| {
            let n = counts[h] as f64;
            HorizonEntry {
                horizon: h,
                rmse: (squared[h].iter().sum::<f64>() / (n * o as f64)).sqrt(),
                rmse_per_dim: squared[h].iter().map(|s| (s / n).sqrt()).collect(),
                windows: counts[h],
            }
        })
        .collect();
    let n = steps.max(1) as f64;
    let recall = if terminal == 0 { f64::NAN } else { terminal_hit as f64 / terminal as f64 };
    (entries, (reward_squared / n).sqrt(), correct as f64 / n, recall)
}


/// Shows `model` the first `CONTEXT_STEPS` observations of each episode and imagines `horizon`
/// steps under the episodes' true actions: `(obs [B*H*O], reward [B*H], continue [B*H])`, flat
/// row-major. `sample`: draw from the model (`sample_next`, the RSSM's prior) instead of its
/// mean/mode. Past an episode's end the last action is repeated (those steps are not scored).
pub fn imagine_from_context(
    model: &AnyModel,
    episodes: &[&wm_replay::Episode],
    horizon: usize,
    o: usize,
    a: usize,
    sample: bool,
    device: &wm_backend::Device,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let b = episodes.len();
    let start = CONTEXT_STEPS - 1;
    let actions: Vec<f32> = episodes
        .iter()
        .flat_map(|e| (0..horizon).flat_map(move |h| e.action(a, (start + h).min(e.len() - 1)).to_vec()))
        .collect();
    match model {
        AnyModel::Transition(model) => {
            let start_obs: Vec<f32> = episodes.iter().flat_map(|e| e.observation(o, start).to_vec()).collect();
            let mut current = Tensor::<2>::from_data(TensorData::new(start_obs, [b, o]), device);
            let (mut obs, mut reward, mut cont) = (vec![0.0; b * horizon * o], vec![0.0; b * horizon], vec![0.0; b * horizon]);
            for h in 0..horizon {
                let step_actions: Vec<f32> = (0..b).flat_map(|row| actions[(row * horizon + h) * a..(row * horizon + h + 1) * a].to_vec()).collect();
                let step_actions = Tensor::<2>::from_data(TensorData::new(step_actions, [b, a]), device);
                let prediction = if sample { model.sample_next(current, step_actions) } else { model.mean_next(current, step_actions) };
                let next = host2(prediction.next_obs.clone());
                let rewards = host(prediction.reward);
                let terminal = host(prediction.terminated_prob);
                for row in 0..b {
                    obs[(row * horizon + h) * o..(row * horizon + h + 1) * o].copy_from_slice(&next[row * o..(row + 1) * o]);
                    reward[row * horizon + h] = rewards[row];
                    cont[row * horizon + h] = 1.0 - terminal[row];
                }
                current = prediction.next_obs;
            }
            (obs, reward, cont)
        }
        AnyModel::Rssm(model) => {
            let context_obs: Vec<f32> = episodes.iter().flat_map(|e| (0..CONTEXT_STEPS).flat_map(move |t| e.observation(o, t).to_vec())).collect();
            let context_actions: Vec<f32> = episodes
                .iter()
                .flat_map(|e| (0..CONTEXT_STEPS).flat_map(move |t| if t == 0 { vec![0.0; a] } else { e.action(a, t - 1).to_vec() }))
                .collect();
            let is_first: Vec<f32> = (0..b).flat_map(|_| (0..CONTEXT_STEPS).map(|t| if t == 0 { 1.0 } else { 0.0 })).collect();
            let t3 = |values: Vec<f32>, width: usize, steps: usize| Tensor::<3>::from_data(TensorData::new(values, [b, steps, width]), device);
            let observed = model.observe(
                t3(context_obs, o, CONTEXT_STEPS),
                t3(context_actions, a, CONTEXT_STEPS),
                Tensor::<2>::from_data(TensorData::new(is_first, [b, CONTEXT_STEPS]), device),
                None,
                false,
            );
            let imagined = model.imagine(observed.last, wm_rssm::Actions::Sequence(t3(actions, a, horizon)), sample);
            let flat3 = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().expect("f32 outputs");
            (flat3(imagined.obs), host2(imagined.reward), host2(imagined.cont))
        }
    }
}

/// Evaluates any model: the one-step models with [`evaluate`]; the RSSM with the episode
/// open-loop test (its one-step RMSE is horizon 1 of that test; it reports no likelihood).
pub fn evaluate_any(model: &AnyModel, buffer: &ReplayBuffer, options: &EvalOptions, update: u64, device: &wm_backend::Device) -> EvalReport {
    match model {
        AnyModel::Transition(transition) => evaluate(transition, buffer, options, update, device),
        AnyModel::Rssm(_) => {
            let mut horizons = options.horizons.clone();
            if !horizons.contains(&1) {
                horizons.push(1);
                horizons.sort_unstable();
            }
            let (open_loop, reward_rmse, termination_accuracy, termination_recall) =
                episode_open_loop(model, buffer, &horizons, options.max_open_loop_windows, device);
            let one_step = open_loop.iter().find(|e| e.horizon == 1).map(|e| e.rmse_per_dim.clone()).unwrap_or_default();
            EvalReport {
                model: model.kind().to_string(),
                update,
                transitions: buffer.n_transitions(),
                nll: Vec::new(),
                one_step_rmse_per_dim: one_step,
                open_loop: open_loop.into_iter().filter(|e| options.horizons.contains(&e.horizon)).collect(),
                reward_rmse,
                termination_accuracy,
                termination_recall,
                policy_return: None,
                policy_episode_length: None,
            }
        }
    }
}
