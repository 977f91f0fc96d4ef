//! The rollout/learner pipeline: worker threads step their own environments with the acting
//! policy and send finished episodes over a bounded crossbeam channel; the learner (the thread
//! that calls [`run`], which owns the device and the optimiser) drains the channel into the replay
//! buffer, trains at a fixed replay ratio under the [`RateLimiter`], and publishes weights
//! versioned by optimiser step, which workers pick up between episodes.
//!
//! Invariants:
//! - Only the learner thread touches the replay buffer, the model being trained and the optimiser.
//! - Workers and learner talk only through [`WorkerMessage`] (closed enum, bounded channel: a slow
//!   learner gives back-pressure), the limiter's counters and the [`WeightsSlot`].
//! - Every thread is joined before [`run`] returns; a worker's panic or error ends the run with an
//!   error naming the worker, and a learner error stops the workers. A learner panic stops and
//!   joins the workers too, then unwinds on: never a hang.
//! - In deterministic mode one worker collects exactly one episode per permit from the learner,
//!   so the interleaving of collection and updates, and hence every number, is fixed by the seed.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::model::AnyModel;
use burn::module::Module;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded};
use wm_backend::Device;
use wm_envs::{Env, EnvError};
use wm_replay::{Episode, EpisodeBuilder, ReplayBuffer, ReplaySpec};

use crate::acting::ActingPolicy;
use crate::config::CollectPolicy;
use crate::error::TrainError;
use crate::limiter::RateLimiter;

/// Makes worker `index`'s environment.
pub type EnvFactory = Arc<dyn Fn(usize) -> Result<Box<dyn Env>, EnvError> + Send + Sync>;

/// What workers send to the learner.
#[derive(Debug)]
pub enum WorkerMessage {
    /// A finished episode, collected with the weights of `weights_version`.
    Episode {
        /// The worker's index.
        worker: usize,
        /// The episode.
        episode: Episode,
        /// The weights version the worker acted with.
        weights_version: u64,
    },
    /// The worker failed (an error or a panic) and has stopped.
    Failed {
        /// The worker's index.
        worker: usize,
        /// What happened.
        error: String,
    },
}

/// Weights published by the learner, versioned by optimiser step.
#[derive(Debug, Clone)]
pub struct PublishedWeights {
    /// The optimiser step they come from (0: initial weights).
    pub version: u64,
    /// The model without autodiff, for acting; `None` before the first publication.
    pub model: Option<AnyModel>,
    /// The actor network without autodiff, when the acting policy is the actor-critic's.
    pub actor: Option<wm_agent::Actor>,
}

/// The newest published weights; readers never block the learner for longer than a pointer swap.
///
/// The slot belongs to the acting device: [`WeightsSlot::publish`] moves the model there on the
/// learner's thread, so a worker only ever reads tensors of the acting device (flex on the CPU),
/// never the learner's libtorch or GPU tensors.
#[derive(Debug)]
pub struct WeightsSlot {
    weights: RwLock<Arc<PublishedWeights>>,
    device: Device,
}

impl Default for WeightsSlot {
    /// A slot for workers acting on flex, the CPU backend.
    fn default() -> Self {
        Self::for_device(Device::flex())
    }
}

impl WeightsSlot {
    /// An empty slot whose published models live on `device`, the workers' acting device.
    pub fn for_device(device: Device) -> Self {
        Self {
            weights: RwLock::new(Arc::new(PublishedWeights {
                version: 0,
                model: None,
                actor: None,
            })),
            device,
        }
    }

    /// The device published models are moved to.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Replaces the published weights with `model` (without autodiff, from `valid()`) and the
    /// actor network when there is one, moved to the slot's device: a copy through host memory
    /// when the learner trains elsewhere.
    pub fn publish(&self, version: u64, model: AnyModel, actor: Option<wm_agent::Actor>) {
        let model = model.to_device(&self.device);
        let actor = actor.map(|actor| actor.to_device(&self.device));
        let weights = Arc::new(PublishedWeights {
            version,
            model: Some(model),
            actor,
        });
        *self
            .weights
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = weights;
    }

    /// The newest weights.
    pub fn latest(&self) -> Arc<PublishedWeights> {
        Arc::clone(
            &self
                .weights
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// How to run the pipeline.
#[derive(Clone)]
pub struct PipelineSetup {
    /// Makes each worker's environment.
    pub env_factory: EnvFactory,
    /// The replay spec (checked against every episode).
    pub replay_spec: ReplaySpec,
    /// Acting policy of the workers.
    pub policy: CollectPolicy,
    /// Device the workers' planners run the published model on: the [`WeightsSlot`]'s device
    /// (flex on the CPU in `wm train`, whatever the learner's device).
    pub acting_device: Device,
    /// Worker threads.
    pub n_workers: usize,
    /// Base seed; each worker derives its own stream.
    pub seed: u64,
    /// Gradient updates per environment step.
    pub replay_ratio: f64,
    /// Environment steps either side may run ahead.
    pub tolerance_steps: u64,
    /// Episodes in flight in the channel.
    pub channel_capacity: usize,
    /// One worker in lock-step with the learner.
    pub deterministic: bool,
    /// Environment steps already counted (prefill, or a resumed run's).
    pub start_inserted: u64,
    /// Updates already done (a resumed run's).
    pub start_updates: u64,
    /// Environment steps before which no update happens (already collected ones count).
    pub prefill: u64,
}

/// What the learner's update callback says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep going.
    Continue,
    /// Training is done.
    Stop,
}

/// Live numbers for `perf/*` logging, passed to every update.
#[derive(Debug, Clone, Default)]
pub struct PipelineStats {
    /// Environment steps inserted into replay (including prefill).
    pub inserted_steps: u64,
    /// Episodes inserted by the pipeline (excluding prefill).
    pub episodes: u64,
    /// Updates done.
    pub updates: u64,
    /// Messages waiting in the channel.
    pub channel_depth: usize,
    /// Per worker: versions behind the newest weights when its last episode arrived.
    pub weight_lag: Vec<u64>,
    /// Per worker: episodes and steps received.
    pub per_worker: Vec<(u64, u64)>,
    /// Fraction of wall time the learner spent in updates.
    pub busy_fraction: f64,
    /// Environment steps per second received since the pipeline started.
    pub env_steps_per_s: f64,
    /// Updates per second since the pipeline started.
    pub updates_per_s: f64,
    /// Updates per environment step after prefill, as achieved.
    pub achieved_ratio: f64,
}

/// Why [`run`] returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The update callback said [`Control::Stop`].
    Done,
    /// The interrupt flag was raised (Ctrl-C).
    Interrupted,
}

/// Runs workers and the learner loop until the callback stops, the interrupt flag rises or
/// something fails; joins every thread before returning.
pub fn run(
    setup: &PipelineSetup,
    replay: &mut ReplayBuffer,
    weights: &Arc<WeightsSlot>,
    interrupt: &AtomicBool,
    mut update: impl FnMut(&mut ReplayBuffer, &PipelineStats) -> Result<Control, TrainError>,
) -> Result<(Ended, PipelineStats), TrainError> {
    assert!(
        *weights.device() == setup.acting_device,
        "the weights slot must publish to the workers' acting device ({:?}), not {:?}",
        setup.acting_device,
        weights.device()
    );
    let n_workers = if setup.deterministic {
        1
    } else {
        setup.n_workers.max(1)
    };
    let limiter = Arc::new(RateLimiter::new(
        setup.replay_ratio,
        setup.prefill,
        setup.tolerance_steps,
        setup.start_inserted,
        setup.start_updates,
    ));
    let (sender, receiver) = bounded::<WorkerMessage>(setup.channel_capacity.max(1));
    let (permit_sender, permit_receiver) = bounded::<()>(0);
    let permit_receiver = setup.deterministic.then_some(permit_receiver);

    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n_workers)
            .map(|worker| {
                let context = WorkerContext {
                    worker,
                    setup: setup.clone(),
                    limiter: Arc::clone(&limiter),
                    weights: Arc::clone(weights),
                    sender: sender.clone(),
                    permits: permit_receiver.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("rollout-worker-{worker}"))
                    .spawn_scoped(scope, move || worker_main(context))
            })
            .collect();
        drop(sender);
        let mut permit_sender = setup.deterministic.then_some(permit_sender);

        // A panic of the learner (the update callback included) is caught so that the workers
        // are stopped and joined first: the scope would otherwise wait forever for workers
        // blocked in the limiter or on a full channel. It is raised again once they are gone.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match handles.iter().position(Result::is_err) {
                Some(worker) => Err(TrainError::Worker {
                    worker,
                    error: "the thread could not be spawned".into(),
                }),
                None => learner_loop(
                    n_workers,
                    replay,
                    weights,
                    interrupt,
                    &limiter,
                    &receiver,
                    &mut permit_sender,
                    &mut update,
                ),
            }
        }));

        // Unblock every worker: the stop flag ends limiter waits, dropping the receiver ends
        // blocked sends, dropping the permit sender ends permit waits.
        limiter.stop();
        drop(permit_sender);
        drop(receiver);
        for handle in handles.into_iter().flatten() {
            // worker_main catches panics, so a join error cannot carry one; ignore it.
            let _ = handle.join();
        }
        match result {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn learner_loop(
    n_workers: usize,
    replay: &mut ReplayBuffer,
    weights: &WeightsSlot,
    interrupt: &AtomicBool,
    limiter: &RateLimiter,
    receiver: &Receiver<WorkerMessage>,
    permit_sender: &mut Option<Sender<()>>,
    update: &mut impl FnMut(&mut ReplayBuffer, &PipelineStats) -> Result<Control, TrainError>,
) -> Result<(Ended, PipelineStats), TrainError> {
    let started = Instant::now();
    let mut busy = Duration::ZERO;
    let mut stats = PipelineStats {
        weight_lag: vec![0; n_workers],
        per_worker: vec![(0, 0); n_workers],
        ..PipelineStats::default()
    };
    let handle = |message: WorkerMessage,
                  replay: &mut ReplayBuffer,
                  stats: &mut PipelineStats|
     -> Result<(), TrainError> {
        match message {
            WorkerMessage::Episode {
                worker,
                episode,
                weights_version,
            } => {
                let steps = episode.len() as u64;
                replay.insert(episode)?;
                limiter.add_inserted(steps);
                stats.episodes += 1;
                stats.per_worker[worker].0 += 1;
                stats.per_worker[worker].1 += steps;
                stats.weight_lag[worker] = weights.latest().version.saturating_sub(weights_version);
                Ok(())
            }
            WorkerMessage::Failed { worker, error } => Err(TrainError::Worker { worker, error }),
        }
    };
    loop {
        if interrupt.load(Ordering::Acquire) {
            return Ok((
                Ended::Interrupted,
                refresh(stats, limiter, receiver, started, busy),
            ));
        }
        loop {
            match receiver.try_recv() {
                Ok(message) => handle(message, replay, &mut stats)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(all_workers_gone()),
            }
        }
        if limiter.learner_may_update() {
            stats = refresh(stats, limiter, receiver, started, busy);
            let update_started = Instant::now();
            let control = update(replay, &stats)?;
            busy += update_started.elapsed();
            limiter.add_update();
            if control == Control::Stop {
                return Ok((
                    Ended::Done,
                    refresh(stats, limiter, receiver, started, busy),
                ));
            }
        } else if let Some(permits) = permit_sender {
            // Deterministic: ask the one worker for exactly one episode and wait for it.
            permits.send(()).map_err(|_| all_workers_gone())?;
            let message = receiver.recv().map_err(|_| all_workers_gone())?;
            handle(message, replay, &mut stats)?;
        } else {
            match receiver.recv_timeout(Duration::from_millis(50)) {
                Ok(message) => handle(message, replay, &mut stats)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(all_workers_gone()),
            }
        }
    }
}

fn all_workers_gone() -> TrainError {
    TrainError::WorkersGone
}

fn refresh(
    mut stats: PipelineStats,
    limiter: &RateLimiter,
    receiver: &Receiver<WorkerMessage>,
    started: Instant,
    busy: Duration,
) -> PipelineStats {
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    stats.inserted_steps = limiter.inserted();
    stats.updates = limiter.updates();
    stats.channel_depth = receiver.len();
    stats.busy_fraction = busy.as_secs_f64() / elapsed;
    stats.env_steps_per_s = stats
        .per_worker
        .iter()
        .map(|(_, steps)| *steps)
        .sum::<u64>() as f64
        / elapsed;
    stats.achieved_ratio = limiter.achieved_ratio();
    stats.updates_per_s = stats.updates_per_s_since(started);
    stats
}

impl PipelineStats {
    fn updates_per_s_since(&self, started: Instant) -> f64 {
        self.updates as f64 / started.elapsed().as_secs_f64().max(1e-9)
    }
}

struct WorkerContext {
    worker: usize,
    setup: PipelineSetup,
    limiter: Arc<RateLimiter>,
    weights: Arc<WeightsSlot>,
    sender: Sender<WorkerMessage>,
    permits: Option<Receiver<()>>,
}

/// Seeds of worker `worker`'s environment and policy streams, distinct per worker and from the
/// prefill's, and shifted on resume so that a resumed run does not replay the same episodes.
pub fn worker_seed(base: u64, worker: usize, start_inserted: u64) -> u64 {
    base.wrapping_add((worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(start_inserted.wrapping_mul(0xbf58_476d_1ce4_e5b9))
}

fn worker_main(context: WorkerContext) {
    let worker = context.worker;
    let sender = context.sender.clone();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| worker_loop(&context)));
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            format!("panicked: {message}")
        }
    };
    // If the learner is already gone there is no one left to tell.
    let _ = sender.send(WorkerMessage::Failed { worker, error });
}

fn worker_loop(context: &WorkerContext) -> Result<(), String> {
    let setup = &context.setup;
    let mut env = (setup.env_factory)(context.worker).map_err(|e| e.to_string())?;
    let seed = worker_seed(setup.seed, context.worker, setup.start_inserted);
    let mut actor = ActingPolicy::new(
        &setup.policy,
        setup.replay_spec.obs_dim,
        env.action_space(),
        seed,
        setup.acting_device.clone(),
        true,
    );
    let mut reset_seed = Some(seed);
    loop {
        if let Some(permits) = &context.permits
            && permits.recv().is_err()
        {
            return Ok(());
        }
        if context.limiter.stopped() {
            return Ok(());
        }
        // The weights are picked up between episodes, so one episode is acted with one version.
        let weights = context.weights.latest();
        let obs = env.reset(reset_seed.take());
        actor.reset(&obs);
        let mut episode =
            EpisodeBuilder::new(&setup.replay_spec, &obs).map_err(|e| e.to_string())?;
        loop {
            // In lock-step mode the permit already paid for the whole episode.
            if context.permits.is_none() && !context.limiter.wait_worker() {
                return Ok(());
            }
            let action = actor.act(weights.model.as_ref(), weights.actor.as_ref());
            let step = env.step(&action).map_err(|e| e.to_string())?;
            actor.observe(&action, &step.obs);
            episode
                .push(&action.to_f32_vec(), step.reward as f32, &step.obs)
                .map_err(|e| e.to_string())?;
            if step.terminated || step.truncated {
                let episode = episode
                    .finish(step.terminated, step.truncated)
                    .map_err(|e| e.to_string())?;
                let weights_version = weights.version;
                context.limiter.add_sent(episode.len() as u64);
                if context
                    .sender
                    .send(WorkerMessage::Episode {
                        worker: context.worker,
                        episode,
                        weights_version,
                    })
                    .is_err()
                {
                    return Ok(());
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wm_envs::{Action, Space, Step};

    fn setup(n_workers: usize, factory: EnvFactory, deterministic: bool) -> PipelineSetup {
        let env = factory(0).expect("env");
        PipelineSetup {
            replay_spec: ReplaySpec::new(env.observation_space().width(), env.action_space()),
            env_factory: factory,
            policy: CollectPolicy::Random,
            acting_device: wm_backend::DeviceSpec::Cpu.init().expect("flex"),
            n_workers,
            seed: 1,
            replay_ratio: 0.5,
            tolerance_steps: 50,
            channel_capacity: 4,
            deterministic,
            start_inserted: 0,
            start_updates: 0,
            prefill: 100,
        }
    }

    fn cartpoles() -> EnvFactory {
        Arc::new(|_| wm_envs::make("cartpole"))
    }

    fn run_counting(
        setup: &PipelineSetup,
        updates: u64,
    ) -> (Result<(Ended, PipelineStats), TrainError>, ReplayBuffer) {
        let mut replay = ReplayBuffer::new(setup.replay_spec.clone(), 1_000_000).expect("buffer");
        let weights = Arc::new(WeightsSlot::default());
        let interrupt = AtomicBool::new(false);
        let mut done = 0;
        let result = run(setup, &mut replay, &weights, &interrupt, |_, _| {
            done += 1;
            Ok(if done >= updates {
                Control::Stop
            } else {
                Control::Continue
            })
        });
        (result, replay)
    }

    /// The learner trains on the test device (flex, or libtorch with `WM_TEST_DEVICE=tch-cpu`);
    /// what the workers read is on flex, with the same parameter values.
    #[test]
    fn published_models_move_to_the_slot_device_with_the_same_parameters() {
        use crate::model::ModelConfig;
        let learner_device = wm_backend::test_device().autodiff();
        learner_device.seed(5);
        let spec = wm_models::ModelSpec {
            obs_dim: 3,
            action: wm_models::ActionSpec::Continuous {
                low: vec![-2.0],
                high: vec![2.0],
            },
        };
        let small_rssm = wm_rssm::RssmConfig {
            deter: 8,
            hidden: 8,
            encoder_hidden: vec![8],
            decoder_hidden: vec![8],
            head_hidden: vec![8],
            ..Default::default()
        };
        for config in [
            ModelConfig::Cvae(wm_models::CvaeConfig {
                hidden: vec![8],
                ..Default::default()
            }),
            ModelConfig::Rssm(small_rssm),
        ] {
            let model = config.init(&spec, wm_models::Normalizer::identity(3), &learner_device);
            let slot = WeightsSlot::default();
            slot.publish(7, model.valid(), None);
            let published = slot.latest();
            assert_eq!(published.version, 7);
            let on_slot = published.model.clone().expect("a model was published");
            assert_eq!(
                on_slot.devices(),
                vec![Device::flex()],
                "{}: every parameter on flex",
                config.kind()
            );
            let bytes = |model: AnyModel| {
                model
                    .into_record()
                    .into_bytes()
                    .expect("record bytes")
                    .to_vec()
            };
            assert!(
                bytes(on_slot) == bytes(model.valid()),
                "{}: the published parameters differ from the learner's",
                config.kind()
            );
        }
    }

    #[cfg(feature = "tch")]
    #[test]
    #[should_panic(expected = "acting device")]
    fn a_slot_for_another_device_than_the_acting_device_is_refused() {
        let mut setup = setup(1, cartpoles(), false);
        setup.acting_device = wm_backend::DeviceSpec::TchCpu
            .init()
            .expect("the tch feature is built in");
        // The default slot publishes to flex.
        let _ = run_counting(&setup, 1);
    }

    #[test]
    fn episodes_from_several_workers_all_reach_replay_once() {
        let setup = setup(3, cartpoles(), false);
        let mut replay = ReplayBuffer::new(setup.replay_spec.clone(), 1_000_000).expect("buffer");
        let weights = Arc::new(WeightsSlot::default());
        let interrupt = AtomicBool::new(false);
        let mut updates = 0u64;
        // Runs until every worker has delivered a few episodes (however the OS schedules them),
        // with a cap so that a starved worker fails the test instead of hanging it.
        let result = run(&setup, &mut replay, &weights, &interrupt, |_, stats| {
            updates += 1;
            let everyone_delivered = stats.per_worker.iter().all(|(episodes, _)| *episodes >= 3);
            Ok(if everyone_delivered || updates >= 200_000 {
                Control::Stop
            } else {
                Control::Continue
            })
        });
        let (ended, stats) = result.expect("pipeline ran");
        assert_eq!(ended, Ended::Done);
        let received: u64 = stats.per_worker.iter().map(|(episodes, _)| episodes).sum();
        let steps: u64 = stats.per_worker.iter().map(|(_, steps)| steps).sum();
        assert_eq!(
            received,
            replay.n_episodes() as u64,
            "every received episode is in replay: {stats:?}"
        );
        assert_eq!(steps, replay.n_transitions() as u64);
        assert_eq!(stats.inserted_steps, steps);
        assert!(
            stats.per_worker.iter().all(|(episodes, _)| *episodes >= 3),
            "all three workers contributed: {:?}",
            stats.per_worker
        );
        // No duplicates: workers use distinct seeds, so no two stored episodes are equal.
        let episodes: Vec<&Episode> = replay.episodes().collect();
        for (i, a) in episodes.iter().enumerate() {
            assert!(
                episodes[i + 1..].iter().all(|b| a != b),
                "episode {i} appears twice"
            );
        }
    }

    #[test]
    fn achieved_replay_ratio_stays_within_tolerance() {
        let setup = setup(2, cartpoles(), false);
        let (result, _) = run_counting(&setup, 1000);
        let (_, stats) = result.expect("pipeline ran");
        let after_prefill = (stats.inserted_steps - setup.prefill) as f64;
        let error = stats.updates as f64 - setup.replay_ratio * after_prefill;
        // The learner never runs ahead by more than the tolerance; the workers can be ahead by the
        // tolerance plus the episodes in flight (whole episodes arrive at once).
        let tolerance = setup.replay_ratio * setup.tolerance_steps as f64;
        let in_flight =
            setup.replay_ratio * 500.0 * (setup.channel_capacity + setup.n_workers) as f64;
        assert!(error <= tolerance + 1.0, "learner ahead by {error} updates");
        assert!(
            error >= -(tolerance + in_flight),
            "workers ahead by {} updates",
            -error
        );
        assert!(
            (stats.achieved_ratio - 0.5).abs() < 0.2,
            "achieved ratio {}",
            stats.achieved_ratio
        );
    }

    /// An environment that panics on its 30th step.
    struct Exploding(Box<dyn Env>, usize);
    impl Env for Exploding {
        fn id(&self) -> &str {
            "Exploding"
        }
        fn observation_space(&self) -> Space {
            self.0.observation_space()
        }
        fn action_space(&self) -> Space {
            self.0.action_space()
        }
        fn max_episode_steps(&self) -> Option<usize> {
            self.0.max_episode_steps()
        }
        fn reset(&mut self, seed: Option<u64>) -> Vec<f32> {
            self.0.reset(seed)
        }
        fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
            self.1 += 1;
            assert!(self.1 < 30, "simulated crash in the environment");
            self.0.step(action)
        }
    }

    #[test]
    fn panicking_worker_stops_the_run_with_an_error_naming_it_and_all_threads_join() {
        let factory: EnvFactory = Arc::new(|worker| {
            let inner = wm_envs::make("cartpole")?;
            Ok(if worker == 1 {
                Box::new(Exploding(inner, 0)) as Box<dyn Env>
            } else {
                inner
            })
        });
        let setup = setup(3, factory, false);
        let (result, _) = run_counting(&setup, 1_000_000);
        let error = result.expect_err("the run should fail");
        let message = error.to_string();
        assert!(
            message.contains("worker 1") && message.contains("simulated crash"),
            "{message}"
        );
        // `run` returned, so the scope joined every worker thread.
    }

    #[test]
    fn deterministic_mode_collects_the_same_episodes_in_the_same_order() {
        let collect = || {
            let setup = setup(1, cartpoles(), true);
            let (result, replay) = run_counting(&setup, 300);
            result.expect("pipeline ran");
            replay.episodes().cloned().collect::<Vec<_>>()
        };
        let first = collect();
        assert!(!first.is_empty());
        assert_eq!(first, collect());
    }

    #[test]
    fn learner_error_stops_the_workers_and_is_returned() {
        let setup = setup(2, cartpoles(), false);
        let mut replay = ReplayBuffer::new(setup.replay_spec.clone(), 1_000_000).expect("buffer");
        let weights = Arc::new(WeightsSlot::default());
        let interrupt = AtomicBool::new(false);
        let mut updates = 0;
        let result = run(&setup, &mut replay, &weights, &interrupt, |_, _| {
            updates += 1;
            if updates == 20 {
                Err(TrainError::WorkersGone)
            } else {
                Ok(Control::Continue)
            }
        });
        assert!(matches!(result, Err(TrainError::WorkersGone)), "{result:?}");
        // `run` returned, so every worker saw the stop and was joined.
    }

    /// Before the fix the scope waited forever for workers blocked in the limiter (this test
    /// timed out); the run happens on a thread so that a regression fails instead of hanging.
    #[test]
    fn learner_panic_stops_and_joins_the_workers_then_unwinds() {
        for deterministic in [false, true] {
            let (done_sender, done) = crossbeam_channel::bounded(1);
            std::thread::spawn(move || {
                let setup = setup(2, cartpoles(), deterministic);
                let mut replay =
                    ReplayBuffer::new(setup.replay_spec.clone(), 1_000_000).expect("buffer");
                let weights = Arc::new(WeightsSlot::default());
                let interrupt = AtomicBool::new(false);
                let mut updates = 0;
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    run(&setup, &mut replay, &weights, &interrupt, |_, _| {
                        updates += 1;
                        assert!(updates < 20, "simulated learner bug");
                        Ok(Control::Continue)
                    })
                }));
                let message = match outcome {
                    Ok(result) => format!("no panic came out: {result:?}"),
                    Err(payload) => payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| {
                            payload
                                .downcast_ref::<&str>()
                                .map(|message| message.to_string())
                        })
                        .unwrap_or_default(),
                };
                let _ = done_sender.send(message);
            });
            let message = done
                .recv_timeout(Duration::from_secs(120))
                .expect("the pipeline hung after the learner panicked");
            assert!(
                message.contains("simulated learner bug"),
                "deterministic={deterministic}: {message:?}"
            );
        }
    }

    #[test]
    fn interrupt_ends_the_run_cleanly() {
        let setup = setup(2, cartpoles(), false);
        let mut replay = ReplayBuffer::new(setup.replay_spec.clone(), 1_000_000).expect("buffer");
        let weights = Arc::new(WeightsSlot::default());
        let interrupt = AtomicBool::new(false);
        let mut updates = 0;
        let (ended, _) = run(&setup, &mut replay, &weights, &interrupt, |_, _| {
            updates += 1;
            if updates == 50 {
                interrupt.store(true, Ordering::Release);
            }
            Ok(Control::Continue)
        })
        .expect("no error");
        assert_eq!((ended, updates), (Ended::Interrupted, 50));
    }
}
