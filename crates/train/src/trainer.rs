//! The training loop, readable top to bottom: prepare the run (folder, data, and the learner
//! fresh or from its checkpoint), then update, log, evaluate and save on named schedules, then
//! evaluate in full and write `eval.json`. The parts live beside it: [`crate::error`],
//! [`crate::state`] (the learner and its checkpoint), [`crate::update`] (the update and the
//! non-finite guard), [`crate::logging`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::module::Module;
use wm_agent::ActorCritic;
use wm_backend::{Device, DeviceSpec};
use wm_models::Normalizer;
use wm_replay::ReplayBuffer;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::{ConfigError, TrainConfig};
use crate::data::{all_transitions, collect_episodes, model_spec, replay_spec, to_tensors};
use crate::error::io_error;
use crate::eval::{EvalOptions, EvalReport, evaluate_any};
use crate::logging::{log_pipeline, log_report, log_update, progress_bar};
use crate::model::{AnyModel, TrainableModel};
use crate::pipeline::{self, Control, Ended, PipelineSetup, PipelineStats, WeightsSlot};
use crate::run::RunFolder;
use crate::state::{Learner, restore_model};
use crate::tensorboard::TensorBoard;
use crate::update::{NonFiniteGuard, agent_update};

pub use crate::error::TrainError;
pub use crate::update::{StepOutcome, sequence_tensors, update_from_replay, update_step};

/// Seeds of held-out episodes are offset from the training seed by this, so the two never share
/// an episode.
pub const EVAL_SEED_OFFSET: u64 = 1_000_003;

/// How to run `train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Where new run folders go.
    pub runs_dir: PathBuf,
    /// The learner's device.
    pub device: DeviceSpec,
    /// Show a progress bar (it also hides itself when stderr is not a terminal).
    pub progress: bool,
    /// Raised (by a Ctrl-C handler) to stop at the next safe point, checkpoint and return.
    pub interrupt: Arc<AtomicBool>,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The run folder.
    pub run: RunFolder,
    /// The final evaluation.
    pub report: EvalReport,
    /// Updates done in this invocation (fewer than configured after a resume).
    pub updates_this_run: u64,
    /// Environment steps in the training replay at the end (prefill included).
    pub env_steps: u64,
    /// The pipeline's final numbers (None when no update was left to do).
    pub pipeline: Option<PipelineStats>,
    /// Wall time of the pipeline phase (collection and updates, after prefill), seconds.
    pub pipeline_seconds: f64,
}

/// Everything a run needs, prepared fresh or from a run folder.
struct Prepared {
    config: TrainConfig,
    run: RunFolder,
    train_buffer: ReplayBuffer,
    eval_buffer: ReplayBuffer,
    learner: Learner,
    /// Environment steps inserted into the training replay so far (prefill included).
    env_steps: u64,
}

/// Starts a new run from `config`. The config is validated and the device started before the
/// run folder is created, so a bad config or device leaves nothing on disk.
pub fn train(config: TrainConfig, options: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    config.validate().map_err(|invalid| ConfigError::Invalid {
        location: "config".into(),
        field: invalid.field,
        message: invalid.message,
    })?;
    let device = options.device.init()?;
    let run = RunFolder::create(
        &options.runs_dir,
        &config.env,
        config.model.kind(),
        config.seed,
    )
    .map_err(io_error("creating run folder in", &options.runs_dir))?;
    std::fs::write(run.config(), config.to_ron()).map_err(io_error("writing", &run.config()))?;
    let prepared = prepare(config, run, &device, None, None)?;
    run_loop(prepared, options, &device)
}

/// Continues the run in `run_dir` from its checkpoint, with the same data and config; `overrides`
/// (`schedule.updates=N` to extend a run) are applied and validated, then checked against the
/// checkpoint (the saved parameters must fit the overridden model), and only then is
/// `config.ron` rewritten (the previous one kept as `config.prev.ron`): a failed resume changes
/// nothing on disk. A run killed before its first checkpoint resumes from update 0 with the
/// replay it has.
pub fn resume(
    run_dir: &Path,
    overrides: &[String],
    options: &TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    let run = RunFolder::open(run_dir);
    let config = TrainConfig::load(&run.config(), overrides)?;
    let device = options.device.init()?;
    let checkpoint = match Checkpoint::load(&run.checkpoint()) {
        Ok(checkpoint) => Some(checkpoint),
        Err(CheckpointError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && run.train_replay().is_file() =>
        {
            None
        }
        Err(CheckpointError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(TrainError::Run {
                run: run.dir.clone(),
                message: "has neither a checkpoint nor replay: there is nothing to resume".into(),
            });
        }
        Err(error) => return Err(error.into()),
    };
    let rewrite = (!overrides.is_empty()).then_some(&config).cloned();
    let prepared = prepare(config, run, &device, checkpoint, rewrite.as_ref())?;
    run_loop(prepared, options, &device)
}

/// Loads a run's model from its checkpoint onto `device` (without autodiff), for `wm eval` and
/// `wm plot`, with the config and the held-out episodes.
pub fn load_for_eval(
    run_dir: &Path,
    device: &Device,
) -> Result<(TrainConfig, AnyModel, ReplayBuffer, u64), TrainError> {
    let run = RunFolder::open(run_dir);
    let config = TrainConfig::load(&run.config(), &[])?;
    let checkpoint = Checkpoint::load(&run.checkpoint())?;
    let update = checkpoint.meta.update;
    let model = restore_model(&config, &checkpoint, device, &run)?;
    let env = wm_envs::make(&config.env).map_err(|source| crate::data::CollectError::Env {
        env: config.env.clone(),
        source,
    })?;
    let eval_buffer = crate::run::open_replay_read_only(
        &run.eval_replay(),
        replay_spec(env.as_ref()),
        eval_capacity(&config),
    )?;
    Ok((config, model, eval_buffer, update))
}

/// Writes `config` as the run's `config.ron` atomically, keeping the previous one as
/// `config.prev.ron`.
fn rewrite_config(run: &RunFolder, config: &TrainConfig) -> Result<(), TrainError> {
    let path = run.config();
    let previous = path.with_file_name("config.prev.ron");
    std::fs::copy(&path, &previous)
        .map_err(io_error("keeping the previous config as", &previous))?;
    let temporary = path.with_extension("ron.tmp");
    let written = std::fs::write(&temporary, config.to_ron())
        .and_then(|()| std::fs::rename(&temporary, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(io_error("writing", &path))
}

/// Opens the run's replay (completing the prefill and the held-out episodes), and builds the
/// learner fresh or from `checkpoint`. `rewrite` (a resume with overrides) is written as
/// `config.ron` once the replay is open and the checkpoint has been restored with it, before
/// anything else is written.
fn prepare(
    config: TrainConfig,
    run: RunFolder,
    device: &Device,
    checkpoint: Option<Checkpoint>,
    rewrite: Option<&TrainConfig>,
) -> Result<Prepared, TrainError> {
    let mut env = wm_envs::make(&config.env).map_err(|source| crate::data::CollectError::Env {
        env: config.env.clone(),
        source,
    })?;
    let spec = replay_spec(env.as_ref());
    let mut train_buffer = crate::run::open_replay(
        &run.train_replay(),
        spec.clone(),
        config.data.replay_capacity,
    )?;
    let mut eval_buffer =
        crate::run::open_replay(&run.eval_replay(), spec, eval_capacity(&config))?;
    let training_device = device.clone().autodiff();
    let restored = checkpoint
        .as_ref()
        .map(|checkpoint| Learner::restore(&config, checkpoint, &training_device, &run))
        .transpose()?;
    if let Some(config) = rewrite {
        rewrite_config(&run, config)?;
    }
    // The prefill is collected here, in order and seeded, before the rollout workers start; a
    // resumed run finds it in the replay file (and completes it if it was stopped while
    // prefilling).
    if train_buffer.n_transitions() < config.data.prefill_steps {
        let seed = config
            .seed
            .wrapping_add(train_buffer.n_episodes() as u64 * 7_919);
        let missing = config.data.prefill_steps - train_buffer.n_transitions();
        collect_episodes(env.as_mut(), seed, missing, &mut train_buffer)?;
    }
    if eval_buffer.n_transitions() < config.data.eval_steps {
        let seed = config
            .seed
            .wrapping_add(EVAL_SEED_OFFSET)
            .wrapping_add(eval_buffer.n_episodes() as u64 * 7_919);
        let missing = config.data.eval_steps - eval_buffer.n_transitions();
        collect_episodes(env.as_mut(), seed, missing, &mut eval_buffer)?;
    }
    train_buffer.flush()?;
    eval_buffer.flush()?;

    let env_steps = checkpoint
        .as_ref()
        .map_or(0, |c| c.meta.env_steps)
        .max(train_buffer.n_transitions() as u64);
    let learner = match restored {
        Some(learner) => learner,
        None => {
            let data = all_transitions(&train_buffer, usize::MAX);
            let normalizer =
                Normalizer::fit(&data.obs, &data.next_obs, &data.rewards, data.obs_dim);
            Learner::fresh(
                &config,
                &model_spec(env.as_ref()),
                normalizer,
                &training_device,
            )
        }
    };
    Ok(Prepared {
        config,
        run,
        train_buffer,
        eval_buffer,
        learner,
        env_steps,
    })
}

/// Capacity of the held-out replay: room for the configured episodes and their overshoot.
fn eval_capacity(config: &TrainConfig) -> usize {
    config.data.eval_steps * 2 + 1000
}

/// The schedules, named.
fn should(every: usize, update: u64) -> bool {
    update.is_multiple_of(every as u64)
}

/// When the acting policy's evaluation episodes run: with the held-out evaluation (every
/// `schedule.eval_every` updates), or, with `eval.policy_every_env_steps` = N > 0, at the first
/// update after the environment steps pass each multiple of N.
#[derive(Debug, Clone, PartialEq)]
struct PolicyEvalSchedule {
    every_env_steps: u64,
    /// The environment steps at which the next evaluation is due (with `every_env_steps` > 0).
    next_at: u64,
}

impl PolicyEvalSchedule {
    /// A schedule starting from `env_steps` already collected (0, or a resumed run's count):
    /// the next evaluation is at the next multiple of N above them.
    fn new(every_env_steps: usize, env_steps: u64) -> Self {
        let every_env_steps = every_env_steps as u64;
        let next_at = env_steps
            .checked_div(every_env_steps)
            .map_or(0, |done| (done + 1) * every_env_steps);
        Self {
            every_env_steps,
            next_at,
        }
    }

    /// Whether the policy evaluation runs after this update, given whether the held-out model
    /// evaluation runs and the environment steps inserted so far; advances the schedule.
    fn due(&mut self, model_eval: bool, env_steps: u64) -> bool {
        if self.every_env_steps == 0 {
            return model_eval;
        }
        if env_steps < self.next_at {
            return false;
        }
        // Several multiples passed within one update (a long episode arrived): one evaluation.
        self.next_at = (env_steps / self.every_env_steps + 1) * self.every_env_steps;
        true
    }
}

fn run_loop(
    prepared: Prepared,
    options: &TrainOptions,
    device: &Device,
) -> Result<TrainOutcome, TrainError> {
    let Prepared {
        config,
        run,
        mut train_buffer,
        eval_buffer,
        mut learner,
        env_steps,
    } = prepared;
    let training_device = device.clone().autodiff();
    let mut tensorboard = TensorBoard::create(&run.dir)
        .map_err(io_error("creating TensorBoard events in", &run.dir))?;
    let first_update = learner.update;
    if first_update == 0 {
        tensorboard.text("config", &format!("```\n{}\n```", config.to_ron()), 0);
        tensorboard.scalar(
            "data/prefill_transitions",
            train_buffer.n_transitions() as f64,
            0,
        );
        tensorboard.scalar(
            "data/eval_transitions",
            eval_buffer.n_transitions() as f64,
            0,
        );
    }
    let periodic = EvalOptions {
        iwae_samples: vec![config.eval.periodic_iwae_samples],
        max_nll_transitions: config.eval.max_nll_transitions.min(1024),
        horizons: config.eval.horizons.clone(),
        max_open_loop_windows: 256,
        truth: crate::eval::TrueLaw::of_env(&config.env),
    };
    let total_updates = config.schedule.updates as u64;
    let progress = progress_bar(total_updates, first_update, options.progress);
    let mut window_start = (Instant::now(), first_update);
    let mut policy_schedule =
        PolicyEvalSchedule::new(config.eval.policy_every_env_steps, env_steps);
    let mut guard = NonFiniteGuard::new(
        config.schedule.max_nonfinite_in_a_row,
        learner.nonfinite_updates,
    );

    // Rollout workers act on flex (the CPU) whatever the learner's device: the slot copies each
    // published model and actor there on this thread, so no libtorch or GPU tensor reaches a worker.
    let weights = Arc::new(WeightsSlot::for_device(Device::flex()));
    weights.publish(
        learner.update,
        learner.model.valid(),
        learner.agent.as_ref().map(ActorCritic::policy),
    );
    let env_name = config.env.clone();
    let setup = PipelineSetup {
        env_factory: Arc::new(move |_| wm_envs::make(&env_name)),
        replay_spec: train_buffer.spec().clone(),
        policy: config.data.policy.clone(),
        acting_device: weights.device().clone(),
        n_workers: config.pipeline.resolved_workers(),
        seed: config.seed,
        replay_ratio: config.pipeline.replay_ratio,
        tolerance_steps: config.pipeline.tolerance_steps as u64,
        channel_capacity: config.pipeline.channel_capacity,
        deterministic: config.pipeline.deterministic,
        start_inserted: env_steps,
        start_updates: learner.update,
        prefill: config.data.prefill_steps as u64,
    };

    let mut env_steps_now = env_steps;
    let mut final_stats = None;
    let pipeline_started = Instant::now();
    let ended = if learner.update >= total_updates {
        Ended::Done
    } else {
        let (ended, stats) = pipeline::run(
            &setup,
            &mut train_buffer,
            &weights,
            &options.interrupt,
            |replay, stats| {
                learner.model.set_update(learner.update);
                let (model, outcome) = update_from_replay(
                    learner.model.clone(),
                    &mut learner.optimizer,
                    replay,
                    &mut learner.rng,
                    &config.optim,
                    &training_device,
                    // The per-module gradient norms, at the updates that are logged.
                    should(config.schedule.log_every, learner.update + 1)
                        || learner.update + 1 == total_updates,
                )?;
                learner.model = model;
                learner.update += 1;
                let update = learner.update;
                // Divergence is checked at every update, before anything is written.
                guard.record(update, &outcome)?;
                learner.nonfinite_updates = guard.total;
                let agent_metrics = match &mut learner.agent {
                    Some(agent) => Some(agent_update(
                        agent,
                        &learner.model.valid(),
                        replay,
                        &mut learner.rng,
                        device,
                    )?),
                    None => None,
                };

                if should(config.schedule.log_every, update) || update == total_updates {
                    log_update(
                        &mut tensorboard,
                        &outcome,
                        agent_metrics.as_ref(),
                        guard.total,
                        update,
                    );
                    log_pipeline(&mut tensorboard, stats, update, &mut window_start);
                    progress.set_message(format!(
                        "loss {:.4}, {} env steps",
                        outcome.total, stats.inserted_steps
                    ));
                }
                progress.set_position(update);

                let model_eval = should(config.schedule.eval_every, update);
                let policy_eval = config.eval.policy_episodes > 0
                    && policy_schedule.due(model_eval, stats.inserted_steps);
                if model_eval {
                    let report = evaluate_any(
                        &learner.model.valid(),
                        &eval_buffer,
                        &periodic,
                        update,
                        device,
                    );
                    log_report(&mut tensorboard, &report);
                }
                if policy_eval {
                    let (mean_return, _) = evaluate_policy_and_log(
                        &mut tensorboard,
                        &learner,
                        &config,
                        stats.inserted_steps,
                        device,
                    )?;
                    tensorboard.scalar("eval/return_by_update", mean_return, update);
                }
                if model_eval || policy_eval {
                    tensorboard.flush()?;
                }
                if should(config.schedule.checkpoint_every, update) {
                    replay.sync()?;
                    learner.save(&run, &config, stats.inserted_steps)?;
                }
                if should(config.pipeline.weight_sync_every, update) {
                    weights.publish(
                        update,
                        learner.model.valid(),
                        learner.agent.as_ref().map(ActorCritic::policy),
                    );
                }
                Ok(if update >= total_updates {
                    Control::Stop
                } else {
                    Control::Continue
                })
            },
        )?;
        env_steps_now = stats.inserted_steps;
        final_stats = Some(stats);
        ended
    };
    let pipeline_seconds = pipeline_started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    train_buffer.sync()?;
    if ended == Ended::Interrupted {
        learner.save(&run, &config, env_steps_now)?;
        tensorboard.flush()?;
        return Err(TrainError::Interrupted {
            update: learner.update,
            run: run.dir.clone(),
        });
    }

    // What a model fits once its parameters are final (the expectation model's residual
    // variance, for its likelihood).
    let data = all_transitions(&train_buffer, 20_000);
    let batches: Vec<_> = (0..data.batch_size)
        .step_by(1024)
        .map(|s| to_tensors(&data, s..(s + 1024).min(data.batch_size), device))
        .collect();
    learner.model.fit_after_training(batches.iter());
    learner.save(&run, &config, env_steps_now)?;

    let full = EvalOptions {
        iwae_samples: config.eval.iwae_samples.clone(),
        max_nll_transitions: config.eval.max_nll_transitions,
        horizons: config.eval.horizons.clone(),
        max_open_loop_windows: 4096,
        truth: crate::eval::TrueLaw::of_env(&config.env),
    };
    let mut report = evaluate_any(
        &learner.model.valid(),
        &eval_buffer,
        &full,
        learner.update,
        device,
    );
    if config.eval.policy_episodes > 0 {
        let (mean_return, mean_length) =
            evaluate_policy_and_log(&mut tensorboard, &learner, &config, env_steps_now, device)?;
        (report.policy_return, report.policy_episode_length) =
            (Some(mean_return), Some(mean_length));
    }
    log_report(&mut tensorboard, &report);
    tensorboard.flush()?;
    let eval_json = run.eval_json();
    std::fs::write(
        &eval_json,
        serde_json::to_string_pretty(&report).expect("report should serialise"),
    )
    .map_err(io_error("writing", &eval_json))?;
    Ok(TrainOutcome {
        run,
        report,
        updates_this_run: learner.update - first_update,
        env_steps: env_steps_now,
        pipeline: final_stats,
        pipeline_seconds,
    })
}

/// Runs the policy evaluation episodes ([`policy_returns`]) and logs their mean return and
/// length as `eval/return` and `eval/episode_length` at `env_steps`.
fn evaluate_policy_and_log(
    tensorboard: &mut TensorBoard,
    learner: &Learner,
    config: &TrainConfig,
    env_steps: u64,
    device: &Device,
) -> Result<(f64, f64), TrainError> {
    let policy_net = learner.agent.as_ref().map(ActorCritic::policy);
    let (mean_return, mean_length) = policy_returns(
        &learner.model.valid(),
        policy_net.as_ref(),
        config,
        config.eval.policy_episodes,
        device,
    )?;
    tensorboard.scalar("eval/return", mean_return, env_steps);
    tensorboard.scalar("eval/episode_length", mean_length, env_steps);
    Ok((mean_return, mean_length))
}

/// Mean return and length of `episodes` real episodes (the trainer: `eval.policy_episodes`)
/// with `config`'s acting policy over `model` and, for the actor policy, `policy_net` (no
/// exploration), on the seeds the trainer's policy evaluation uses (`config.seed + 2 *
/// EVAL_SEED_OFFSET` on), so `wm eval` reproduces the run's `eval/return`.
pub fn policy_returns(
    model: &AnyModel,
    policy_net: Option<&wm_agent::Actor>,
    config: &TrainConfig,
    episodes: usize,
    device: &Device,
) -> Result<(f64, f64), TrainError> {
    let seed = config.seed.wrapping_add(2 * EVAL_SEED_OFFSET);
    let results = crate::acting::evaluate_policy(
        model,
        policy_net,
        &config.env,
        &config.data.policy,
        episodes,
        seed,
        device,
    )
    .map_err(|source| crate::data::CollectError::Env {
        env: config.env.clone(),
        source,
    })?;
    let n = results.len().max(1) as f64;
    Ok((
        results.iter().map(|r| r.0).sum::<f64>() / n,
        results.iter().map(|r| r.1 as f64).sum::<f64>() / n,
    ))
}

#[cfg(test)]
mod tests {
    use super::PolicyEvalSchedule;

    #[test]
    fn policy_evaluation_follows_the_model_evaluation_when_no_step_interval_is_set() {
        let mut schedule = PolicyEvalSchedule::new(0, 1000);
        assert!(!schedule.due(false, 5000));
        assert!(schedule.due(true, 5001));
    }

    #[test]
    fn policy_evaluation_runs_once_per_multiple_of_the_step_interval() {
        // A run with 250 prefill steps, evaluated every 100 environment steps.
        let mut schedule = PolicyEvalSchedule::new(100, 250);
        let inserted = [250, 260, 299, 300, 301, 350, 420, 430, 900, 901, 999, 1000];
        let due: Vec<u64> = inserted
            .into_iter()
            .filter(|&steps| schedule.due(false, steps))
            .collect();
        // 300 and 420 (first past 400); 900 (an episode jumped past 500..900: one evaluation);
        // 1000.
        assert_eq!(due, vec![300, 420, 900, 1000]);
    }

    #[test]
    fn policy_evaluation_ignores_the_model_schedule_when_a_step_interval_is_set() {
        let mut schedule = PolicyEvalSchedule::new(100, 0);
        assert!(
            !schedule.due(true, 50),
            "the model evaluation alone is not a reason"
        );
        assert!(schedule.due(false, 100));
    }

    #[test]
    fn a_resumed_run_evaluates_at_the_next_multiple_after_its_steps() {
        let mut schedule = PolicyEvalSchedule::new(100, 1234);
        assert!(!schedule.due(false, 1299));
        assert!(schedule.due(false, 1300));
    }
}
