//! The acting policy of the rollout workers and of evaluation episodes: uniformly random
//! actions, model-predictive control with a planner over the newest published model, or the
//! newest published actor network of the actor-critic (a sample of its policy while collecting,
//! its mode in evaluation).
//!
//! A worker keeps one [`Actor`] for its whole life, and the actor **carries the model state**
//! through each episode: the state is started from the episode's first observation
//! ([`WorldModel::start`]) and advanced with [`WorldModel::observe_step`] exactly once per real
//! step (the RSSM's posterior update; a one-step model's state is the new observation), and
//! the planner plans from it ([`Planner::plan_from`]) or the actor network reads its features.
//! [`ActingPolicy::reset`] drops the state (and the planner's warm start) at each episode start.
//!
//! **Weights during an episode.** The weights an episode acts with are bound at its first
//! action that has a model (and, for the actor policy, an actor network) and kept until the
//! episode ends: weights passed to [`ActingPolicy::act`] later in the episode are ignored until the
//! next [`ActingPolicy::reset`], so a state is never stepped by weights other than those that filtered
//! it. (The pipeline's workers pick up the newest weights between episodes anyway.) When the
//! first weights of a run arrive mid-episode, the episode so far is filtered with them once,
//! one step after another, before acting; until then the actions are random.
//!
//! The actor is generic over the [`WorldModel`]; the workers use [`AnyModel`] (see
//! [`crate::world_model`]), so nothing here depends on the kind of model.

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wm_envs::{Action, Space};
use wm_imagine::{Context, WorldModel};
use wm_plan::{AnyPlanner, Planner};

use crate::config::CollectPolicy;
use crate::model::AnyModel;

/// How actions are chosen.
#[allow(
    clippy::large_enum_variant,
    reason = "a handful of values per process (one per model or worker), never stored in bulk"
)]
enum Policy {
    Random,
    Planner(AnyPlanner),
    /// The published actor network; `explore`: sample its policy rather than take its mode.
    Network {
        explore: bool,
    },
}

/// The weights an episode acts with and the model state filtered through its last real step.
struct Bound<M: WorldModel> {
    model: M,
    policy_net: Option<wm_agent::Actor>,
    state: M::State,
}

/// Chooses actions for one environment, carrying the model state through the episode.
pub struct ActingPolicy<M: WorldModel = AnyModel> {
    policy: Policy,
    action_space: Space,
    obs_dim: usize,
    rng: ChaCha8Rng,
    device: Device,
    /// Real steps not filtered yet, oldest first: `(action that led to the observation, or None
    /// for the episode's first observation, observation)`. Until weights are bound this is the
    /// whole episode so far.
    pending: Vec<(Option<Vec<f32>>, Vec<f32>)>,
    /// `None` until the episode's first action with a model.
    bound: Option<Bound<M>>,
}

impl<M: WorldModel + Clone> ActingPolicy<M> {
    /// An actor for `policy` in an environment with these spaces, acting on `device`; `seed`
    /// drives the random actions and the planner's sampling. `explore`: sample the actor
    /// network's policy (data collection) instead of taking its mode (evaluation); planners
    /// ignore it.
    pub fn new(
        policy: &CollectPolicy,
        obs_dim: usize,
        action_space: Space,
        seed: u64,
        device: Device,
        explore: bool,
    ) -> Self {
        let action_spec = match &action_space {
            Space::Discrete { n } => wm_models::ActionSpec::Discrete { n: *n },
            Space::Box { low, high } => wm_models::ActionSpec::Continuous {
                low: low.clone(),
                high: high.clone(),
            },
        };
        let policy = match policy {
            CollectPolicy::Random => Policy::Random,
            CollectPolicy::Planner(config) => Policy::Planner(config.init(&action_spec, seed)),
            CollectPolicy::Actor(_) => Policy::Network { explore },
        };
        Self {
            policy,
            action_space,
            obs_dim,
            rng: ChaCha8Rng::seed_from_u64(seed),
            device,
            pending: Vec::new(),
            bound: None,
        }
    }

    /// Starts an episode at `obs`: forgets the model state, the bound weights and the planner's
    /// warm start.
    pub fn reset(&mut self, obs: &[f32]) {
        self.bound = None;
        self.pending.clear();
        match &mut self.policy {
            Policy::Random => {}
            Policy::Planner(planner) => {
                planner.reset();
                self.pending.push((None, obs.to_vec()));
            }
            Policy::Network { .. } => self.pending.push((None, obs.to_vec())),
        }
    }

    /// Records the real step just taken: the action and the observation it led to (filtered
    /// into the model state at the next [`ActingPolicy::act`]).
    pub fn observe(&mut self, action: &Action, next_obs: &[f32]) {
        if !matches!(self.policy, Policy::Random) {
            self.pending
                .push((Some(action.to_f32_vec()), next_obs.to_vec()));
        }
    }

    /// The action for the current observation (the last one given to `reset` or `observe`).
    /// Random when the policy is random or no model (or actor network) has been published yet.
    /// `model` and `policy_net` are the newest published weights; the episode keeps the first
    /// ones it acted with (see the module docs).
    ///
    /// # Panics
    /// Before the first [`ActingPolicy::reset`] when the policy uses a model.
    pub fn act(&mut self, model: Option<&M>, policy_net: Option<&wm_agent::Actor>) -> Action {
        if matches!(self.policy, Policy::Random) {
            return self.action_space.sample(&mut self.rng);
        }
        if self.bound.is_none() {
            let needs_net = matches!(self.policy, Policy::Network { .. });
            match (model, policy_net) {
                (Some(model), net) if net.is_some() || !needs_net => {
                    self.bind(model, net.filter(|_| needs_net))
                }
                _ => return self.action_space.sample(&mut self.rng),
            }
        } else {
            self.filter_pending();
        }
        let bound = self.bound.as_ref().expect("weights are bound");
        match &mut self.policy {
            Policy::Planner(planner) => planner
                .plan_from(&bound.model, &bound.state)
                .pop()
                .expect("one action for one row"),
            Policy::Network { explore } => {
                let net = bound
                    .policy_net
                    .as_ref()
                    .expect("the actor policy binds an actor network");
                let dist = net.forward(bound.model.features(&bound.state));
                let action = net.to_raw(if *explore { dist.sample() } else { dist.mode() });
                let values = action
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .expect("f32 actions");
                match &self.action_space {
                    Space::Discrete { .. } => Action::Discrete(values[0] as usize),
                    Space::Box { .. } => Action::Continuous(values),
                }
            }
            Policy::Random => unreachable!("random actions return early"),
        }
    }

    /// Binds the episode to `model` (and `policy_net`) and filters the episode so far with them.
    fn bind(&mut self, model: &M, policy_net: Option<&wm_agent::Actor>) {
        let mut steps = std::mem::take(&mut self.pending).into_iter();
        let (first_action, first_obs) = steps
            .next()
            .expect("ActingPolicy::act before ActingPolicy::reset");
        debug_assert!(
            first_action.is_none(),
            "the first pending step is the episode's first observation"
        );
        let state = model.start(&Context::new(self.row(first_obs)), false);
        self.bound = Some(Bound {
            model: model.clone(),
            policy_net: policy_net.cloned(),
            state,
        });
        self.pending = steps.collect();
        self.filter_pending();
    }

    /// Advances the bound state through the pending real steps, one `observe_step` each.
    fn filter_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let width = self.action_space.width();
        for (action, obs) in pending {
            let action = action.expect("only the episode's first observation has no action");
            let (action, obs) = (
                Tensor::<2>::from_data(TensorData::new(action, [1, width]), &self.device),
                self.row(obs),
            );
            let bound = self.bound.as_mut().expect("weights are bound");
            bound.state = bound.model.observe_step(&bound.state, action, obs, false);
        }
    }

    /// One observation as a `[1, O]` tensor on the acting device.
    fn row(&self, obs: Vec<f32>) -> Tensor<2> {
        Tensor::from_data(TensorData::new(obs, [1, self.obs_dim]), &self.device)
    }
}

/// Runs `episodes` evaluation episodes of `env_name` with `policy` over `model` (the planner's
/// mean plan, or the actor network's mode: no exploration) and returns `(return, length)` for
/// each. Seeds are `seed, seed + 1, ...`.
pub fn evaluate_policy(
    model: &AnyModel,
    policy_net: Option<&wm_agent::Actor>,
    env_name: &str,
    policy: &CollectPolicy,
    episodes: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<(f64, usize)>, wm_envs::EnvError> {
    evaluate_policy_watched(
        model,
        policy_net,
        env_name,
        policy,
        episodes,
        seed,
        device,
        &mut |_| {},
    )
}

/// One real step of an evaluation episode, as [`evaluate_policy_watched`] shows it.
#[derive(Debug, Clone, Copy)]
pub struct WatchedStep<'a> {
    /// The episode's index (0-based).
    pub episode: usize,
    /// The step within the episode: 0 is the first observation, before any action.
    pub t: usize,
    /// The observation at step `t`.
    pub obs: &'a [f32],
    /// The action that led to `obs` and the reward it earned (`None` at `t == 0`).
    pub taken: Option<(&'a Action, f64)>,
    /// Whether the episode ended at `obs` (terminated or truncated).
    pub done: bool,
}

/// [`evaluate_policy`], calling `watch` with each episode's first observation and then with
/// every real step (rendering in `wm play`).
#[allow(
    clippy::too_many_arguments,
    reason = "evaluate_policy's arguments and the watcher"
)]
pub fn evaluate_policy_watched(
    model: &AnyModel,
    policy_net: Option<&wm_agent::Actor>,
    env_name: &str,
    policy: &CollectPolicy,
    episodes: usize,
    seed: u64,
    device: &Device,
    watch: &mut dyn FnMut(WatchedStep<'_>),
) -> Result<Vec<(f64, usize)>, wm_envs::EnvError> {
    let mut env = wm_envs::make(env_name)?;
    let mut actor = ActingPolicy::new(
        policy,
        env.observation_space().width(),
        env.action_space(),
        seed,
        device.clone(),
        false,
    );
    let mut results = Vec::with_capacity(episodes);
    for episode in 0..episodes {
        let obs = env.reset(Some(seed.wrapping_add(episode as u64)));
        watch(WatchedStep {
            episode,
            t: 0,
            obs: &obs,
            taken: None,
            done: false,
        });
        actor.reset(&obs);
        let (mut total, mut length) = (0.0, 0);
        loop {
            let action = actor.act(Some(model), policy_net);
            let step = env.step(&action)?;
            total += step.reward;
            length += 1;
            let done = step.terminated || step.truncated;
            watch(WatchedStep {
                episode,
                t: length,
                obs: &step.obs,
                taken: Some((&action, step.reward)),
                done,
            });
            actor.observe(&action, &step.obs);
            if done {
                break;
            }
        }
        results.push((total, length));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use wm_imagine::StepPrediction;
    use wm_models::ActionSpec;

    #[test]
    fn random_actor_acts_without_a_model_and_planner_actor_falls_back_to_random_until_weights_arrive()
     {
        let device = wm_backend::DeviceSpec::Cpu.init().expect("flex");
        for policy in [
            CollectPolicy::Random,
            CollectPolicy::Planner(wm_plan::PlannerConfig::cem()),
            CollectPolicy::Actor(wm_agent::ActorCriticConfig::default()),
        ] {
            let mut actor = ActingPolicy::<AnyModel>::new(
                &policy,
                4,
                Space::Discrete { n: 2 },
                0,
                device.clone(),
                true,
            );
            actor.reset(&[0.0; 4]);
            let action = actor.act(None, None);
            assert!(matches!(action, Action::Discrete(0 | 1)), "{action:?}");
        }
    }

    /// What the recording model saw: `(weights tag, event, value)`.
    type Log = Rc<RefCell<Vec<(u32, &'static str, f32)>>>;

    /// A model that records its filtering: the state `[B, 1]` is the sum of the observations'
    /// first values since the episode's start (so it shows which steps were filtered, and how
    /// often); `repeat` (called once per plan) records the state planned from. Its one-dimensional
    /// action moves nothing; rewards are 0.
    #[derive(Clone)]
    struct Recorder {
        tag: u32,
        spec: ActionSpec,
        log: Log,
    }

    impl WorldModel for Recorder {
        type State = Tensor<2>;
        fn obs_dim(&self) -> usize {
            1
        }
        fn action_spec(&self) -> &ActionSpec {
            &self.spec
        }
        fn start(&self, context: &Context, _: bool) -> Tensor<2> {
            let obs = context.obs().clone();
            self.log
                .borrow_mut()
                .push((self.tag, "start", obs.clone().into_scalar::<f32>()));
            obs
        }
        fn observe_step(
            &self,
            state: &Tensor<2>,
            _: Tensor<2>,
            obs: Tensor<2>,
            _: bool,
        ) -> Tensor<2> {
            self.log
                .borrow_mut()
                .push((self.tag, "observe", obs.clone().into_scalar::<f32>()));
            state.clone() + obs
        }
        fn step(&self, state: &Tensor<2>, _: Tensor<2>, _: bool) -> (Tensor<2>, StepPrediction) {
            let [b, _] = state.dims();
            let device = state.device();
            (
                state.clone(),
                StepPrediction {
                    obs: state.clone(),
                    reward: Tensor::zeros([b], &device),
                    continue_prob: Tensor::ones([b], &device),
                },
            )
        }
        fn observation(&self, state: &Tensor<2>) -> Tensor<2> {
            state.clone()
        }
        fn batch_size(&self, state: &Tensor<2>) -> usize {
            state.dims()[0]
        }
        fn repeat(&self, state: &Tensor<2>, times: usize) -> Tensor<2> {
            self.log
                .borrow_mut()
                .push((self.tag, "plan", state.clone().into_scalar::<f32>()));
            wm_imagine::repeat_rows(state.clone(), times)
        }
        fn features(&self, state: &Tensor<2>) -> Tensor<2> {
            self.log
                .borrow_mut()
                .push((self.tag, "features", state.clone().into_scalar::<f32>()));
            state.clone()
        }
    }

    fn policies() -> [CollectPolicy; 2] {
        let planner = wm_plan::PlannerConfig {
            horizon: 2,
            candidates: 4,
            elites: 2,
            iterations: 1,
            ..wm_plan::PlannerConfig::cem()
        };
        [
            CollectPolicy::Planner(planner),
            CollectPolicy::Actor(wm_agent::ActorCriticConfig::default()),
        ]
    }

    fn setup(
        policy: &CollectPolicy,
    ) -> (
        ActingPolicy<Recorder>,
        Recorder,
        Recorder,
        wm_agent::Actor,
        Log,
    ) {
        let device = wm_backend::DeviceSpec::Cpu.init().expect("flex");
        let spec = ActionSpec::Continuous {
            low: vec![-1.0],
            high: vec![1.0],
        };
        let log = Log::default();
        let (a, b) = (
            Recorder {
                tag: 1,
                spec: spec.clone(),
                log: log.clone(),
            },
            Recorder {
                tag: 2,
                spec: spec.clone(),
                log: log.clone(),
            },
        );
        let bounds = wm_agent::PolicyBounds {
            min_std: 0.1,
            max_std: 1.0,
            unimix: 0.01,
        };
        let net = wm_agent::Actor::new(1, &[4], &spec, bounds, &device);
        let actor = ActingPolicy::new(
            policy,
            1,
            Space::Box {
                low: vec![-1.0],
                high: vec![1.0],
            },
            0,
            device,
            true,
        );
        (actor, a, b, net, log)
    }

    /// What acting reads of the state: the planner's `repeat`, or the network's `features`.
    fn read(policy: &CollectPolicy) -> &'static str {
        if matches!(policy, CollectPolicy::Planner(_)) {
            "plan"
        } else {
            "features"
        }
    }

    #[test]
    fn the_model_state_is_filtered_once_per_real_step_and_reset_on_a_new_episode() {
        for policy in policies() {
            let (mut actor, model, _, net, log) = setup(&policy);
            let act = read(&policy);
            let action = Action::Continuous(vec![0.5]);
            actor.reset(&[1.0]);
            actor.act(Some(&model), Some(&net));
            for obs in [2.0, 3.0, 4.0] {
                actor.observe(&action, &[obs]);
                actor.act(Some(&model), Some(&net));
            }
            // A new episode starts from its own first observation, not from the old state.
            actor.reset(&[10.0]);
            actor.act(Some(&model), Some(&net));
            actor.observe(&action, &[20.0]);
            actor.act(Some(&model), Some(&net));
            let want = vec![
                (1, "start", 1.0),
                (1, act, 1.0),
                (1, "observe", 2.0),
                (1, act, 3.0),
                (1, "observe", 3.0),
                (1, act, 6.0),
                (1, "observe", 4.0),
                (1, act, 10.0),
                (1, "start", 10.0),
                (1, act, 10.0),
                (1, "observe", 20.0),
                (1, act, 30.0),
            ];
            assert_eq!(*log.borrow(), want, "{policy:?}");
        }
    }

    #[test]
    fn an_episode_keeps_the_weights_it_started_acting_with_and_catches_up_once_when_the_first_weights_arrive()
     {
        for policy in policies() {
            let (mut actor, old, new, net, log) = setup(&policy);
            let act = read(&policy);
            let action = Action::Continuous(vec![0.5]);
            // No weights yet: random actions, nothing filtered.
            actor.reset(&[1.0]);
            assert!(matches!(actor.act(None, None), Action::Continuous(_)));
            actor.observe(&action, &[2.0]);
            if matches!(policy, CollectPolicy::Actor(_)) {
                // A model without an actor network is not enough for the actor policy.
                actor.act(Some(&old), None);
            }
            actor.observe(&action, &[3.0]);
            assert!(
                log.borrow().is_empty(),
                "{policy:?}: filtered before any weights: {:?}",
                log.borrow()
            );
            // The first weights arrive: the episode so far is filtered once, then acted on.
            actor.act(Some(&old), Some(&net));
            // Newer weights mid-episode are ignored: the old weights step the old state.
            actor.observe(&action, &[4.0]);
            actor.act(Some(&new), Some(&net));
            // The next episode acts with the newer weights from its start.
            actor.reset(&[5.0]);
            actor.act(Some(&new), Some(&net));
            let want = vec![
                (1, "start", 1.0),
                (1, "observe", 2.0),
                (1, "observe", 3.0),
                (1, act, 6.0),
                (1, "observe", 4.0),
                (1, act, 10.0),
                (2, "start", 5.0),
                (2, act, 5.0),
            ];
            assert_eq!(*log.borrow(), want, "{policy:?}");
        }
    }
}
