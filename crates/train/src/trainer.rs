//! The training loop of a transition model, readable top to bottom: prepare the run (folder,
//! data, model, optimiser, or all of it from a checkpoint), then update, log, evaluate and save
//! on named schedules, then evaluate in full and write `eval.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use wm_backend::{Device, DeviceSpec};
use wm_models::{AnyTransitionModel, LossOutput, ModelSpec, Normalizer, TransitionModel, TransitionTensors};
use wm_agent::{ActorCritic, AgentBytes};
use wm_imagine::{Context, WorldModel};
use wm_replay::{ReplayBuffer, SequenceBatch, SequenceMode};

use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::config::{CollectPolicy, TrainConfig};
use crate::data::{all_transitions, collect_episodes, model_spec, replay_spec, to_tensors};
use crate::eval::{EvalOptions, EvalReport, evaluate_any};
use crate::model::AnyModel;
use crate::grad::clip_global_norm;
use crate::pipeline::{self, Control, Ended, PipelineSetup, PipelineStats, WeightsSlot};
use crate::run::RunFolder;
use crate::tensorboard::TensorBoard;

/// Seeds of held-out episodes are offset from the training seed by this, so the two never share
/// an episode.
pub const EVAL_SEED_OFFSET: u64 = 1_000_003;

/// Errors of a training or evaluation run; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad config.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Bad device.
    #[error(transparent)]
    Device(#[from] wm_backend::BackendError),
    /// Environment or collection failure.
    #[error(transparent)]
    Collect(#[from] crate::data::CollectError),
    /// Replay file failure.
    #[error(transparent)]
    Replay(#[from] wm_replay::ReplayError),
    /// Checkpoint failure.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// TensorBoard event file failure.
    #[error(transparent)]
    TensorBoard(#[from] crate::tensorboard::TensorBoardError),
    /// A file in the run folder.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The run folder's contents do not fit together.
    #[error("run {run}: {message}")]
    Run {
        /// The run folder.
        run: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A rollout worker failed; the run was stopped.
    #[error("rollout worker {worker} failed: {error}")]
    Worker {
        /// The worker's index.
        worker: usize,
        /// Its error or panic message.
        error: String,
    },
    /// Every worker stopped without a word (should not happen: workers report their errors).
    #[error("every rollout worker stopped without reporting an error")]
    WorkersGone,
    /// Ctrl-C: the run stopped at a safe point after saving its checkpoint.
    #[error("interrupted at update {update}; the checkpoint is saved: continue with `wm train --resume {}`", run.display())]
    Interrupted {
        /// The update reached.
        update: u64,
        /// The run folder.
        run: PathBuf,
    },
    /// The loss became NaN or infinite.
    #[error("the loss diverged at update {update}: {terms}")]
    Diverged {
        /// The update.
        update: u64,
        /// The loss terms at that update.
        terms: String,
    },
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io { operation, path: path.to_path_buf(), source }
}

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

/// The model's host-side state saved with its parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ModelState {
    Transition { spec: ModelSpec, normalizer: Normalizer, residual_std: Option<Vec<f32>> },
    Rssm { spec: ModelSpec },
}

/// A model, its optimiser and the sampling RNG: what a checkpoint restores; and the
/// actor-critic when the acting policy is the actor.
struct Learner {
    model: AnyModel,
    optimizer: ModuleOptimizer,
    rng: ChaCha8Rng,
    update: u64,
    agent: Option<ActorCritic>,
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

/// Starts a new run from `config`.
pub fn train(config: TrainConfig, options: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    let run = RunFolder::create(&options.runs_dir, &config.env, config.model.kind(), config.seed)
        .map_err(io_error("creating run folder in", &options.runs_dir))?;
    std::fs::write(run.config(), config.to_ron()).map_err(io_error("writing", &run.config()))?;
    let device = options.device.init()?;
    let prepared = prepare(config, run, &device, None)?;
    run_loop(prepared, options, &device)
}

/// Continues the run in `run_dir` from its checkpoint, with the same data and config; `overrides`
/// (`schedule.updates=N` to extend a run) are applied and the config saved back.
pub fn resume(run_dir: &Path, overrides: &[String], options: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    let run = RunFolder::open(run_dir);
    let config = TrainConfig::load(&run.config(), overrides)?;
    if !overrides.is_empty() {
        std::fs::write(run.config(), config.to_ron()).map_err(io_error("writing", &run.config()))?;
    }
    let checkpoint = Checkpoint::load(&run.checkpoint())?;
    let device = options.device.init()?;
    let prepared = prepare(config, run, &device, Some(checkpoint))?;
    run_loop(prepared, options, &device)
}

/// Loads a run's model from its checkpoint onto `device` (without autodiff), for `wm eval` and
/// `wm plot`, with the config and the held-out episodes.
pub fn load_for_eval(run_dir: &Path, device: &Device) -> Result<(TrainConfig, AnyModel, ReplayBuffer, u64), TrainError> {
    let run = RunFolder::open(run_dir);
    let config = TrainConfig::load(&run.config(), &[])?;
    let checkpoint = Checkpoint::load(&run.checkpoint())?;
    let update = checkpoint.meta.update;
    let model = restore_model(&config, &checkpoint, device, &run)?;
    let env = wm_envs::make(&config.env).map_err(|source| crate::data::CollectError::Env { env: config.env.clone(), source })?;
    let eval_buffer = crate::run::open_replay_read_only(&run.eval_replay(), replay_spec(env.as_ref()), eval_capacity(&config))?;
    Ok((config, model, eval_buffer, update))
}

fn restore_model(config: &TrainConfig, checkpoint: &Checkpoint, device: &Device, run: &RunFolder) -> Result<AnyModel, TrainError> {
    let run_error = |message: String| TrainError::Run { run: run.dir.clone(), message };
    if checkpoint.meta.model_kind != config.model.kind() {
        return Err(run_error(format!(
            "the checkpoint holds a {} model but config.ron configures a {}",
            checkpoint.meta.model_kind,
            config.model.kind()
        )));
    }
    let state: ModelState = serde_json::from_value(checkpoint.meta.model_state.clone())
        .map_err(|error| run_error(format!("the checkpoint's model state is unreadable: {error}")))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(checkpoint.model_bytes.clone()))
        .map_err(|error| run_error(format!("the checkpoint's model record is unreadable: {error:?}")))?;
    let (spec, normalizer, residual_std) = match state {
        ModelState::Transition { spec, normalizer, residual_std } => (spec, normalizer, residual_std),
        ModelState::Rssm { spec } => {
            let identity = Normalizer::identity(spec.obs_dim);
            (spec, identity, None)
        }
    };
    let mut model = config
        .model
        .init(&spec, normalizer, device)
        .try_load_record(record)
        .map_err(|error| run_error(format!("the checkpoint's parameters do not fit the configured model: {error:?}")))?;
    if let (Some(std), AnyModel::Transition(transition)) = (residual_std, &mut model) {
        transition.set_residual_std(std);
    }
    Ok(model)
}

fn prepare(config: TrainConfig, run: RunFolder, device: &Device, checkpoint: Option<Checkpoint>) -> Result<Prepared, TrainError> {
    let mut env = wm_envs::make(&config.env).map_err(|source| crate::data::CollectError::Env { env: config.env.clone(), source })?;
    let spec = replay_spec(env.as_ref());
    let mut train_buffer = crate::run::open_replay(&run.train_replay(), spec.clone(), config.data.replay_capacity)?;
    let mut eval_buffer = crate::run::open_replay(&run.eval_replay(), spec, eval_capacity(&config))?;
    // The prefill is collected here, in order and seeded, before the rollout workers start; a
    // resumed run finds it in the replay file (and completes it if it was stopped while
    // prefilling).
    if train_buffer.n_transitions() < config.data.prefill_steps {
        let seed = config.seed.wrapping_add(train_buffer.n_episodes() as u64 * 7_919);
        let missing = config.data.prefill_steps - train_buffer.n_transitions();
        collect_episodes(env.as_mut(), seed, missing, &mut train_buffer)?;
    }
    if eval_buffer.n_transitions() < config.data.eval_steps {
        let seed = config.seed.wrapping_add(EVAL_SEED_OFFSET).wrapping_add(eval_buffer.n_episodes() as u64 * 7_919);
        let missing = config.data.eval_steps - eval_buffer.n_transitions();
        collect_episodes(env.as_mut(), seed, missing, &mut eval_buffer)?;
    }
    train_buffer.flush()?;
    eval_buffer.flush()?;

    let training_device = device.clone().autodiff();
    let optimizer = AdamConfig::new().with_epsilon(config.optim.eps).init();
    let env_steps = checkpoint.as_ref().map_or(0, |c| c.meta.env_steps).max(train_buffer.n_transitions() as u64);
    let learner = match checkpoint {
        None => {
            training_device.seed(config.seed);
            let data = all_transitions(&train_buffer, usize::MAX);
            let normalizer = Normalizer::fit(&data.obs, &data.next_obs, &data.rewards, data.obs_dim);
            let model = config.model.init(&model_spec(env.as_ref()), normalizer, &training_device);
            let agent = match &config.data.policy {
                CollectPolicy::Actor(agent) => Some(ActorCritic::new(agent, feature_dim(&model), &model_spec(env.as_ref()).action, &training_device)),
                _ => None,
            };
            Learner { model, optimizer, rng: ChaCha8Rng::seed_from_u64(config.seed), update: 0, agent }
        }
        Some(checkpoint) => {
            // The device RNG (reparameterisation noise) cannot be saved; reseeding it from the
            // update count keeps a resumed run reproducible, though not identical to an
            // uninterrupted one.
            training_device.seed(config.seed ^ checkpoint.meta.update.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let model = restore_model(&config, &checkpoint, &training_device, &run)?;
            let optimizer = optimizer
                .from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer_bytes.clone()))
                .map_err(|error| TrainError::Run { run: run.dir.clone(), message: format!("the optimiser state is unreadable: {error:?}") })?;
            let rng = rng_from_json(&checkpoint.meta.rng_state)
                .ok_or_else(|| TrainError::Run { run: run.dir.clone(), message: "the checkpoint's RNG state is unreadable".into() })?;
            let agent = match &config.data.policy {
                CollectPolicy::Actor(agent) => Some(load_agent(agent, &model, &run, &training_device, checkpoint.meta.update)?),
                _ => None,
            };
            Learner { model, optimizer, rng, update: checkpoint.meta.update, agent }
        }
    };
    Ok(Prepared { config, run, train_buffer, eval_buffer, learner, env_steps })
}

fn rng_to_json(rng: &ChaCha8Rng) -> serde_json::Value {
    serde_json::json!({ "seed": rng.get_seed(), "stream": rng.get_stream(), "word_pos": rng.get_word_pos().to_string() })
}

fn rng_from_json(value: &serde_json::Value) -> Option<ChaCha8Rng> {
    let seed: [u8; 32] = serde_json::from_value(value.get("seed")?.clone()).ok()?;
    let mut rng = ChaCha8Rng::from_seed(seed);
    rng.set_stream(value.get("stream")?.as_u64()?);
    rng.set_word_pos(value.get("word_pos")?.as_str()?.parse().ok()?);
    Some(rng)
}

/// Width of the features the actor and critic read from `model`'s states.
fn feature_dim(model: &AnyModel) -> usize {
    match model {
        AnyModel::Transition(model) => model.feature_dim(),
        AnyModel::Rssm(model) => WorldModel::feature_dim(model),
    }
}

/// Restores the actor-critic saved beside the model's checkpoint (`agent.wmck`).
fn load_agent(config: &wm_agent::ActorCriticConfig, model: &AnyModel, run: &RunFolder, device: &Device, update: u64) -> Result<ActorCritic, TrainError> {
    let path = run.agent_checkpoint();
    let run_error = |message: String| TrainError::Run { run: run.dir.clone(), message };
    let saved = Checkpoint::load(&path)?;
    if saved.meta.update != update {
        return Err(run_error(format!("{} is from update {} but the model's checkpoint from update {update}", path.display(), saved.meta.update)));
    }
    let bytes = AgentBytes { nets: saved.model_bytes, optimizer: saved.optimizer_bytes, state: saved.meta.model_state.to_string() };
    let spec = match model {
        AnyModel::Transition(m) => m.spec().action.clone(),
        AnyModel::Rssm(m) => m.spec().action.clone(),
    };
    ActorCritic::from_bytes(config, feature_dim(model), &spec, device, &bytes).map_err(|error| run_error(format!("{}: {error}", path.display())))
}

/// Start states for the actor-critic, sampled from the replay on `device` (without autodiff):
/// about `starts` observations for the one-step models; for the RSSM, every posterior state of
/// `starts / 16` replayed sequences of 16 steps (Dreamer starts from all posterior states of a
/// batch).
fn agent_update(agent: &mut ActorCritic, model: &AnyModel, replay: &ReplayBuffer, rng: &mut ChaCha8Rng, device: &Device) -> Result<std::collections::BTreeMap<String, f64>, TrainError> {
    let starts = agent.config().starts;
    Ok(match model {
        AnyModel::Transition(model) => {
            let batch = replay.sample_transitions(rng, starts)?;
            let obs = to_tensors(&batch, 0..batch.batch_size, device).obs;
            agent.update(model, &obs)
        }
        AnyModel::Rssm(model) => {
            const START_SEQ_LEN: usize = 16;
            let batch = replay.sample_sequences(rng, starts.div_ceil(START_SEQ_LEN).max(1), START_SEQ_LEN, SequenceMode::Straddle)?;
            let context = Context::from_sequences(&sequence_tensors(&batch, device));
            let states = model.start_every_step(&context, true);
            agent.update(model, &states)
        }
    })
}

fn save_checkpoint(learner: &Learner, run: &RunFolder, config: &TrainConfig, env_steps: u64) -> Result<(), TrainError> {
    let run_error = |message: String| TrainError::Run { run: run.dir.clone(), message };
    // The actor-critic first: a kill between the two files leaves a newer agent beside the older
    // model checkpoint, which `load_agent` reports instead of mixing them.
    if let Some(agent) = &learner.agent {
        let bytes = agent.to_bytes().map_err(|e| run_error(format!("serialising the actor-critic: {e}")))?;
        let checkpoint = Checkpoint {
            meta: CheckpointMeta {
                update: learner.update,
                env_steps,
                model_kind: "actor_critic".into(),
                config_ron: config.to_ron(),
                model_state: serde_json::from_str(&bytes.state).expect("the agent state is JSON"),
                rng_state: serde_json::Value::Null,
                writer_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            model_bytes: bytes.nets,
            optimizer_bytes: bytes.optimizer,
        };
        checkpoint.save_atomic(&run.agent_checkpoint())?;
    }
    let state = match &learner.model {
        AnyModel::Transition(model) => ModelState::Transition {
            spec: model.spec().clone(),
            normalizer: model.normalizer().clone(),
            residual_std: model.residual_std().map(<[f32]>::to_vec),
        },
        AnyModel::Rssm(model) => {
            let spec = model.spec();
            ModelState::Rssm { spec: ModelSpec { obs_dim: spec.obs_dim, action: spec.action.clone() } }
        }
    };
    let model_bytes = learner.model.clone().into_record().into_bytes().map_err(|e| run_error(format!("serialising the model: {e:?}")))?;
    let optimizer_bytes = learner.optimizer.into_bytes().map_err(|e| run_error(format!("serialising the optimiser: {e:?}")))?;
    let checkpoint = Checkpoint {
        meta: CheckpointMeta {
            update: learner.update,
            env_steps,
            model_kind: learner.model.kind().to_string(),
            config_ron: config.to_ron(),
            model_state: serde_json::to_value(&state).expect("model state should serialise"),
            rng_state: rng_to_json(&learner.rng),
            writer_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        model_bytes: model_bytes.to_vec(),
        optimizer_bytes: optimizer_bytes.to_vec(),
    };
    checkpoint.save_atomic(&run.checkpoint())?;
    Ok(())
}

/// One gradient update: loss, backward, global-norm clipping, Adam. Returns the updated model,
/// the loss (for logging) and the gradient norm before clipping. `wm bench` times exactly this.
pub fn update_step(
    model: AnyTransitionModel,
    optimizer: &mut ModuleOptimizer,
    batch: &TransitionTensors,
    lr: f64,
    grad_clip: f32,
) -> (AnyTransitionModel, LossOutput, f32) {
    let loss = model.loss(batch);
    let mut grads = GradientsParams::from_grads(loss.total.backward(), &model);
    let grad_norm = clip_global_norm(&model, &mut grads, grad_clip);
    (optimizer.step(lr, model, grads), loss, grad_norm)
}

/// One update of any model from a batch sampled out of `replay`: transitions for the one-step
/// models, sequences for the RSSM. Returns the updated model, the loss and the gradient norm
/// before clipping. This is the step `wm train` runs and `wm bench update` times.
pub fn update_from_replay(
    model: AnyModel,
    optimizer: &mut ModuleOptimizer,
    replay: &ReplayBuffer,
    rng: &mut ChaCha8Rng,
    optim: &crate::config::OptimConfig,
    device: &Device,
) -> Result<(AnyModel, LossOutput, f32), TrainError> {
    Ok(match model {
        AnyModel::Transition(model) => {
            let batch = replay.sample_transitions(rng, optim.batch_size)?;
            let batch = to_tensors(&batch, 0..batch.batch_size, device);
            let (model, loss, grad_norm) = update_step(model, optimizer, &batch, optim.lr, optim.grad_clip);
            (AnyModel::Transition(model), loss, grad_norm)
        }
        AnyModel::Rssm(model) => {
            // Straddling sequences (is_first marks each episode start) so that short episodes,
            // like random CartPole ones, still fill `seq_len` steps.
            let batch = replay.sample_sequences(rng, optim.batch_size, optim.seq_len, SequenceMode::Straddle)?;
            let batch = sequence_tensors(&batch, device);
            let (model, loss) = wm_rssm::update_step(model, optimizer, &batch, optim.lr, optim.grad_clip);
            let grad_norm = loss.metrics.get("grad_norm").copied().unwrap_or(f64::NAN) as f32;
            (AnyModel::Rssm(model), loss, grad_norm)
        }
    })
}

/// Capacity of the held-out replay: room for the configured episodes and their overshoot.
fn eval_capacity(config: &TrainConfig) -> usize {
    config.data.eval_steps * 2 + 1000
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

/// The schedules, named.
fn should(every: usize, update: u64) -> bool {
    update % every as u64 == 0
}

fn run_loop(prepared: Prepared, options: &TrainOptions, device: &Device) -> Result<TrainOutcome, TrainError> {
    let Prepared { config, run, mut train_buffer, eval_buffer, mut learner, env_steps } = prepared;
    let training_device = device.clone().autodiff();
    let mut tensorboard = TensorBoard::create(&run.dir).map_err(io_error("creating TensorBoard events in", &run.dir))?;
    let first_update = learner.update;
    if first_update == 0 {
        tensorboard.text("config", &format!("```\n{}\n```", config.to_ron()), 0);
        tensorboard.scalar("data/prefill_transitions", train_buffer.n_transitions() as f64, 0);
        tensorboard.scalar("data/eval_transitions", eval_buffer.n_transitions() as f64, 0);
    }
    let periodic = EvalOptions {
        iwae_samples: vec![config.eval.periodic_iwae_samples],
        max_nll_transitions: config.eval.max_nll_transitions.min(1024),
        horizons: config.eval.horizons.clone(),
        max_open_loop_windows: 256,
    };
    let total_updates = config.schedule.updates as u64;
    let progress = progress_bar(total_updates, first_update, options.progress);
    let mut window_start = (Instant::now(), first_update);

    // Rollout workers act on flex (the CPU) whatever the learner's device: the slot copies each
    // published model and actor there on this thread, so no libtorch or GPU tensor reaches a worker.
    let weights = Arc::new(WeightsSlot::for_device(Device::flex()));
    weights.publish(learner.update, learner.model.valid(), learner.agent.as_ref().map(ActorCritic::policy));
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
        let (ended, stats) = pipeline::run(&setup, &mut train_buffer, &weights, &options.interrupt, |replay, stats| {
            let (model, loss, grad_norm) =
                update_from_replay(learner.model.clone(), &mut learner.optimizer, replay, &mut learner.rng, &config.optim, &training_device)?;
            learner.model = model;
            learner.update += 1;
            let update = learner.update;
            let agent_metrics = match &mut learner.agent {
                Some(agent) => Some(agent_update(agent, &learner.model.valid(), replay, &mut learner.rng, device)?),
                None => None,
            };

            if should(config.schedule.log_every, update) || update == total_updates {
                let total = loss.total.clone().into_scalar::<f32>();
                let terms: Vec<(String, f64)> =
                    loss.terms.iter().map(|(name, term)| (name.clone(), f64::from(term.clone().into_scalar::<f32>()))).collect();
                if !total.is_finite() {
                    let described: Vec<String> = terms.iter().map(|(n, v)| format!("{n}={v}")).collect();
                    return Err(TrainError::Diverged { update, terms: described.join(", ") });
                }
                tensorboard.scalar("loss/total", f64::from(total), update);
                tensorboard.scalars("loss", terms.iter().map(|(n, v)| (n.as_str(), *v)), update);
                tensorboard.scalars("train", loss.metrics.iter().map(|(n, v)| (n.as_str(), *v)), update);
                tensorboard.scalar("train/grad_norm", f64::from(grad_norm), update);
                if let Some(metrics) = &agent_metrics {
                    tensorboard.scalars("agent", metrics.iter().map(|(n, v)| (n.as_str(), *v)), update);
                }
                log_pipeline(&mut tensorboard, stats, update, &mut window_start);
                progress.set_message(format!("loss {total:.4}, {} env steps", stats.inserted_steps));
            }
            progress.set_position(update);

            if should(config.schedule.eval_every, update) {
                let report = evaluate_any(&learner.model.valid(), &eval_buffer, &periodic, update, device);
                log_report(&mut tensorboard, &report);
                if config.eval.policy_episodes > 0 {
                    let (mean_return, mean_length) = policy_returns(&learner.model.valid(), learner.agent.as_ref(), &config, device)?;
                    tensorboard.scalar("eval/return", mean_return, stats.inserted_steps);
                    tensorboard.scalar("eval/episode_length", mean_length, stats.inserted_steps);
                    tensorboard.scalar("eval/return_by_update", mean_return, update);
                }
                tensorboard.flush()?;
            }
            if should(config.schedule.checkpoint_every, update) {
                replay.sync()?;
                save_checkpoint(&learner, &run, &config, stats.inserted_steps)?;
            }
            if should(config.pipeline.weight_sync_every, update) {
                weights.publish(update, learner.model.valid(), learner.agent.as_ref().map(ActorCritic::policy));
            }
            Ok(if update >= total_updates { Control::Stop } else { Control::Continue })
        })?;
        env_steps_now = stats.inserted_steps;
        final_stats = Some(stats);
        ended
    };
    let pipeline_seconds = pipeline_started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    train_buffer.sync()?;
    if ended == Ended::Interrupted {
        save_checkpoint(&learner, &run, &config, env_steps_now)?;
        tensorboard.flush()?;
        return Err(TrainError::Interrupted { update: learner.update, run: run.dir.clone() });
    }

    // The expectation model's likelihood uses the variance of its training residuals (the
    // other models have nothing to fit and return None).
    let data = all_transitions(&train_buffer, 20_000);
    let batches: Vec<_> = (0..data.batch_size).step_by(1024).map(|s| to_tensors(&data, s..(s + 1024).min(data.batch_size), device)).collect();
    if let AnyModel::Transition(model) = &mut learner.model
        && let Some(std) = model.valid().fit_residual_std(batches.iter())
    {
        model.set_residual_std(std);
    }
    save_checkpoint(&learner, &run, &config, env_steps_now)?;

    let full = EvalOptions {
        iwae_samples: if learner.model.kind() == "cvae" { config.eval.iwae_samples.clone() } else { vec![1] },
        max_nll_transitions: config.eval.max_nll_transitions,
        horizons: config.eval.horizons.clone(),
        max_open_loop_windows: 4096,
    };
    let mut report = evaluate_any(&learner.model.valid(), &eval_buffer, &full, learner.update, device);
    if config.eval.policy_episodes > 0 {
        let (mean_return, mean_length) = policy_returns(&learner.model.valid(), learner.agent.as_ref(), &config, device)?;
        tensorboard.scalar("eval/return", mean_return, env_steps_now);
        tensorboard.scalar("eval/episode_length", mean_length, env_steps_now);
        (report.policy_return, report.policy_episode_length) = (Some(mean_return), Some(mean_length));
    }
    log_report(&mut tensorboard, &report);
    tensorboard.flush()?;
    let eval_json = run.eval_json();
    std::fs::write(&eval_json, serde_json::to_string_pretty(&report).expect("report should serialise")).map_err(io_error("writing", &eval_json))?;
    Ok(TrainOutcome {
        run,
        report,
        updates_this_run: learner.update - first_update,
        env_steps: env_steps_now,
        pipeline: final_stats,
        pipeline_seconds,
    })
}

/// Mean return and length of `eval.policy_episodes` real episodes with the acting policy over
/// `model` (held-out seeds, no exploration).
fn policy_returns(model: &AnyModel, agent: Option<&ActorCritic>, config: &TrainConfig, device: &Device) -> Result<(f64, f64), TrainError> {
    let seed = config.seed.wrapping_add(2 * EVAL_SEED_OFFSET);
    let policy_net = agent.map(ActorCritic::policy);
    let results = crate::acting::evaluate_policy(model, policy_net.as_ref(), &config.env, &config.data.policy, config.eval.policy_episodes, seed, device)
        .map_err(|source| crate::data::CollectError::Env { env: config.env.clone(), source })?;
    let n = results.len().max(1) as f64;
    Ok((results.iter().map(|r| r.0).sum::<f64>() / n, results.iter().map(|r| r.1 as f64).sum::<f64>() / n))
}

/// Writes the pipeline's throughput and health under `perf/`.
fn log_pipeline(tensorboard: &mut TensorBoard, stats: &PipelineStats, update: u64, window_start: &mut (Instant, u64)) {
    let elapsed = window_start.0.elapsed().as_secs_f64();
    tensorboard.scalar("perf/updates_per_s", (update - window_start.1) as f64 / elapsed.max(1e-9), update);
    *window_start = (Instant::now(), update);
    tensorboard.scalar("perf/env_steps_per_s", stats.env_steps_per_s, update);
    tensorboard.scalar("perf/replay_ratio", stats.achieved_ratio, update);
    tensorboard.scalar("perf/channel_depth", stats.channel_depth as f64, update);
    tensorboard.scalar("perf/learner_busy_fraction", stats.busy_fraction, update);
    for (worker, lag) in stats.weight_lag.iter().enumerate() {
        tensorboard.scalar(&format!("perf/weight_lag_worker{worker}"), *lag as f64, update);
    }
    tensorboard.scalar("data/env_steps", stats.inserted_steps as f64, update);
}

/// Writes an evaluation's headline numbers under `eval/`.
pub fn log_report(tensorboard: &mut TensorBoard, report: &EvalReport) {
    let step = report.update;
    for entry in &report.nll {
        tensorboard.scalar(&format!("eval/nll_k{}", entry.k), entry.nats_per_dim, step);
    }
    let dims = report.one_step_rmse_per_dim.len().max(1) as f64;
    let mean_square: f64 = report.one_step_rmse_per_dim.iter().map(|r| r * r).sum::<f64>() / dims;
    tensorboard.scalar("eval/one_step_rmse", mean_square.sqrt(), step);
    for entry in &report.open_loop {
        tensorboard.scalar(&format!("eval/open_loop_rmse_h{}", entry.horizon), entry.rmse, step);
    }
    tensorboard.scalar("eval/reward_rmse", report.reward_rmse, step);
    tensorboard.scalar("eval/termination_accuracy", report.termination_accuracy, step);
}

fn progress_bar(total: u64, position: u64, enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    // Draws to stderr, and not at all when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} updates [{elapsed_precise} < {eta_precise}] {msg}")
            .expect("the progress template should be valid"),
    );
    bar.set_position(position);
    bar
}
