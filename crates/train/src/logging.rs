//! What a run writes to TensorBoard besides the config, and the progress bar.

use std::time::Instant;

use crate::eval::EvalReport;
use crate::pipeline::PipelineStats;
use crate::tensorboard::TensorBoard;
use crate::update::StepOutcome;

/// Writes an update's loss terms, metrics, gradient norm and the count of skipped
/// (non-finite) updates under `loss/` and `train/`, and the agent's metrics under `agent/`.
pub fn log_update(
    tensorboard: &mut TensorBoard,
    outcome: &StepOutcome,
    agent_metrics: Option<&std::collections::BTreeMap<String, f64>>,
    nonfinite_updates: u64,
    update: u64,
) {
    let terms: Vec<(String, f64)> = outcome
        .loss
        .terms
        .iter()
        .map(|(name, term)| (name.clone(), f64::from(term.clone().into_scalar::<f32>())))
        .collect();
    tensorboard.scalar("loss/total", f64::from(outcome.total), update);
    tensorboard.scalars("loss", terms.iter().map(|(n, v)| (n.as_str(), *v)), update);
    tensorboard.scalars(
        "train",
        outcome.loss.metrics.iter().map(|(n, v)| (n.as_str(), *v)),
        update,
    );
    tensorboard.scalar("train/grad_norm", f64::from(outcome.grad_norm), update);
    tensorboard.scalar("train/nonfinite_updates", nonfinite_updates as f64, update);
    if let Some(metrics) = agent_metrics {
        tensorboard.scalars(
            "agent",
            metrics.iter().map(|(n, v)| (n.as_str(), *v)),
            update,
        );
    }
}

/// Writes the pipeline's throughput and health under `perf/`.
pub fn log_pipeline(
    tensorboard: &mut TensorBoard,
    stats: &PipelineStats,
    update: u64,
    window_start: &mut (Instant, u64),
) {
    let elapsed = window_start.0.elapsed().as_secs_f64();
    tensorboard.scalar(
        "perf/updates_per_s",
        (update - window_start.1) as f64 / elapsed.max(1e-9),
        update,
    );
    *window_start = (Instant::now(), update);
    tensorboard.scalar("perf/env_steps_per_s", stats.env_steps_per_s, update);
    tensorboard.scalar("perf/replay_ratio", stats.achieved_ratio, update);
    tensorboard.scalar("perf/channel_depth", stats.channel_depth as f64, update);
    tensorboard.scalar("perf/learner_busy_fraction", stats.busy_fraction, update);
    for (worker, lag) in stats.weight_lag.iter().enumerate() {
        tensorboard.scalar(
            &format!("perf/weight_lag_worker{worker}"),
            *lag as f64,
            update,
        );
    }
    tensorboard.scalar("data/env_steps", stats.inserted_steps as f64, update);
}

/// Writes an evaluation's headline numbers under `eval/`.
pub fn log_report(tensorboard: &mut TensorBoard, report: &EvalReport) {
    let step = report.update;
    for entry in &report.nll {
        tensorboard.scalar(&format!("eval/{}", entry.tag()), entry.nats_per_dim, step);
    }
    let dims = report.one_step_rmse_per_dim.len().max(1) as f64;
    let mean_square: f64 = report
        .one_step_rmse_per_dim
        .iter()
        .map(|r| r * r)
        .sum::<f64>()
        / dims;
    tensorboard.scalar("eval/one_step_rmse", mean_square.sqrt(), step);
    for entry in &report.open_loop {
        tensorboard.scalar(
            &format!("eval/open_loop_rmse_h{}", entry.horizon),
            entry.rmse,
            step,
        );
    }
    tensorboard.scalar("eval/reward_rmse", report.reward_rmse, step);
    for entry in [&report.energy_score, &report.energy_score_long]
        .into_iter()
        .flatten()
    {
        tensorboard.scalar(
            &format!("eval/energy_score_h{}", entry.horizon),
            entry.mean,
            step,
        );
    }
    if let Some(truth) = &report.truth {
        tensorboard.scalar("eval/mmd2_h1", truth.mmd2, step);
        tensorboard.scalar("eval/energy_distance_h1", truth.energy_distance, step);
        if truth.multimodal_transitions > 0 {
            tensorboard.scalar("eval/mode_coverage_h1", truth.mode_coverage, step);
            tensorboard.scalar(
                "eval/weighted_mode_coverage_h1",
                truth.weighted_mode_coverage,
                step,
            );
        }
    }
    tensorboard.scalar(
        "eval/termination_accuracy",
        report.termination_accuracy,
        step,
    );
}

/// A progress bar of updates (hidden unless `enabled`).
pub fn progress_bar(total: u64, position: u64, enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    // Draws to stderr, and not at all when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} updates [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .expect("the progress template should be valid"),
    );
    bar.set_position(position);
    bar
}
