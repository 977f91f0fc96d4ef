//! Imagined against real trajectories: one panel per (observation dimension, held-out episode).
//! The real trajectory is black, the model's open-loop mean rollout red, and a few sampled
//! rollouts (`sample_next` fed back to itself) light red, so a sample model's spread shows.

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use plotters::prelude::*;
use wm_models::{AnyTransitionModel, TransitionModel};
use wm_replay::{Episode, ReplayBuffer};

/// Sampled rollouts drawn per episode besides the mean rollout.
const SAMPLED_ROLLOUTS: usize = 5;
const PANEL_WIDTH: u32 = 360;
const PANEL_HEIGHT: u32 = 200;

/// Errors while drawing.
#[derive(Debug, thiserror::Error)]
#[error("plotting to {path}: {message}")]
pub struct PlotError {
    /// The image file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Rolls `model` out open loop on the `n_episodes` longest held-out episodes (at most `horizon`
/// steps each) and writes the PNG to `path`. Returns the image size.
pub fn plot_open_loop(
    model: &AnyTransitionModel,
    buffer: &ReplayBuffer,
    n_episodes: usize,
    horizon: usize,
    path: &Path,
    device: &wm_backend::Device,
) -> Result<(u32, u32), PlotError> {
    let fail = |message: String| PlotError { path: path.display().to_string(), message };
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        // Registering the embedded font cannot fail for a valid TTF; a failure shows as missing labels.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
    let spec = buffer.spec();
    let obs_dim = spec.obs_dim;
    let mut episodes: Vec<&Episode> = buffer.episodes().collect();
    episodes.sort_by_key(|e| std::cmp::Reverse(e.len()));
    episodes.truncate(n_episodes.max(1));
    if episodes.is_empty() {
        return Err(fail("the run has no held-out episodes".into()));
    }
    let (width, height) = (PANEL_WIDTH * episodes.len() as u32, PANEL_HEIGHT * obs_dim as u32);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let panels = root.split_evenly((obs_dim, episodes.len()));
    for (column, episode) in episodes.iter().enumerate() {
        let steps = episode.len().min(horizon);
        let real: Vec<Vec<f32>> = (0..=steps).map(|t| episode.observation(obs_dim, t).to_vec()).collect();
        let mean = rollout(model, episode, steps, obs_dim, spec.action_width(), false, device);
        let samples: Vec<_> = (0..SAMPLED_ROLLOUTS).map(|_| rollout(model, episode, steps, obs_dim, spec.action_width(), true, device)).collect();
        for dim in 0..obs_dim {
            let series = |trajectory: &[Vec<f32>]| -> Vec<(f64, f64)> {
                trajectory.iter().enumerate().map(|(t, obs)| (t as f64, f64::from(obs[dim]))).collect()
            };
            let all: Vec<f64> = real.iter().chain(&mean).map(|o| f64::from(o[dim])).filter(|v| v.is_finite()).collect();
            let (low, high) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let pad = ((high - low) * 0.1).max(1e-3);
            let panel = &panels[dim * episodes.len() + column];
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("episode {column}, obs[{dim}]"), ("sans-serif", 14))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..steps as f64, (low - pad)..(high + pad))
                .map_err(|e| fail(e.to_string()))?;
            chart.configure_mesh().light_line_style(WHITE).label_style(("sans-serif", 11)).draw().map_err(|e| fail(e.to_string()))?;
            for sample in &samples {
                chart.draw_series(LineSeries::new(series(sample), RGBColor(240, 170, 170))).map_err(|e| fail(e.to_string()))?;
            }
            chart.draw_series(LineSeries::new(series(&real), BLACK.stroke_width(2))).map_err(|e| fail(e.to_string()))?;
            chart.draw_series(LineSeries::new(series(&mean), RED.stroke_width(2))).map_err(|e| fail(e.to_string()))?;
        }
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok((width, height))
}

fn rollout(
    model: &AnyTransitionModel,
    episode: &Episode,
    steps: usize,
    obs_dim: usize,
    action_width: usize,
    sample: bool,
    device: &wm_backend::Device,
) -> Vec<Vec<f32>> {
    let mut current = Tensor::<2>::from_data(TensorData::new(episode.observation(obs_dim, 0).to_vec(), [1, obs_dim]), device);
    let mut trajectory = vec![episode.observation(obs_dim, 0).to_vec()];
    for t in 0..steps {
        let action = Tensor::<2>::from_data(TensorData::new(episode.action(action_width, t).to_vec(), [1, action_width]), device);
        let prediction = if sample { model.sample_next(current, action) } else { model.mean_next(current, action) };
        current = prediction.next_obs;
        trajectory.push(current.clone().into_data().try_to_vec::<f32>().expect("model outputs should be f32"));
    }
    trajectory
}
