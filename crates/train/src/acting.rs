//! The acting policy of the rollout workers and of evaluation episodes: uniformly random
//! actions, model-predictive control with a planner over the newest published model, or the
//! newest published actor network of the actor-critic (a sample of its policy while collecting,
//! its mode in evaluation).
//!
//! A worker keeps one [`Actor`] for its whole life: the planner's warm start is reset at each
//! episode start, and the last `HISTORY` real steps are kept so that the RSSM can filter its
//! latent state from them (one-step models just use the last observation).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wm_envs::{Action, Space};
use wm_imagine::{HistoryWindow, WorldModel};
use wm_plan::{AnyPlanner, Planner};

use crate::config::CollectPolicy;
use crate::model::AnyModel;

/// Real steps an RSSM observes before planning from the current state.
const HISTORY: usize = 8;

/// Chooses actions for one environment.
pub struct Actor {
    planner: Option<AnyPlanner>,
    /// Acting with the published actor network (`CollectPolicy::Actor`).
    uses_policy_net: bool,
    /// Sample the actor network's policy (collection) rather than take its mode (evaluation).
    explore: bool,
    window: HistoryWindow,
    action_space: Space,
    rng: ChaCha8Rng,
    device: wm_backend::Device,
}

impl Actor {
    /// An actor for `policy` in an environment with these spaces; `seed` drives the random
    /// actions and the planner's sampling. `explore`: sample the actor network's policy (data
    /// collection) instead of taking its mode (evaluation); planners ignore it.
    pub fn new(policy: &CollectPolicy, obs_dim: usize, action_space: Space, seed: u64, device: wm_backend::Device, explore: bool) -> Self {
        let action_spec = match &action_space {
            Space::Discrete { n } => wm_models::ActionSpec::Discrete { n: *n },
            Space::Box { low, high } => wm_models::ActionSpec::Continuous { low: low.clone(), high: high.clone() },
        };
        let planner = match policy {
            CollectPolicy::Random => None,
            CollectPolicy::Planner(config) => Some(config.init(&action_spec, seed)),
            CollectPolicy::Actor(_) => None,
        };
        let uses_policy_net = matches!(policy, CollectPolicy::Actor(_));
        Self { planner, uses_policy_net, explore, window: HistoryWindow::new(HISTORY, obs_dim, action_space.width()), action_space, rng: ChaCha8Rng::seed_from_u64(seed), device }
    }

    /// Starts an episode at `obs`.
    pub fn reset(&mut self, obs: &[f32]) {
        self.window.reset(obs);
        if let Some(planner) = &mut self.planner {
            planner.reset();
        }
    }

    /// The action for the current observation (the last one given to `reset` or `observe`).
    /// Random when the policy is random or no model (or actor network) has been published yet.
    pub fn act(&mut self, model: Option<&AnyModel>, policy_net: Option<&wm_agent::Actor>) -> Action {
        match (&mut self.planner, model, policy_net) {
            (Some(planner), Some(model), _) => {
                let context = self.window.context(&self.device);
                match model {
                    AnyModel::Transition(model) => planner.plan_one(model, &context),
                    AnyModel::Rssm(model) => planner.plan_one(model, &context),
                }
            }
            (None, Some(model), Some(net)) if self.uses_policy_net => {
                let context = self.window.context(&self.device);
                let features = match model {
                    AnyModel::Transition(model) => model.features(&model.start(&context, false)),
                    AnyModel::Rssm(model) => model.features(&WorldModel::start(model, &context, false)),
                };
                let dist = net.forward(features);
                let action = net.to_raw(if self.explore { dist.sample() } else { dist.mode() });
                let values = action.into_data().try_to_vec::<f32>().expect("f32 actions");
                match &self.action_space {
                    Space::Discrete { .. } => Action::Discrete(values[0] as usize),
                    Space::Box { .. } => Action::Continuous(values),
                }
            }
            _ => self.action_space.sample(&mut self.rng),
        }
    }

    /// Records the step just taken.
    pub fn observe(&mut self, action: &Action, next_obs: &[f32]) {
        self.window.push(&action.to_f32_vec(), next_obs);
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
    device: &wm_backend::Device,
) -> Result<Vec<(f64, usize)>, wm_envs::EnvError> {
    let mut env = wm_envs::make(env_name)?;
    let mut actor = Actor::new(policy, env.observation_space().width(), env.action_space(), seed, device.clone(), false);
    let mut results = Vec::with_capacity(episodes);
    for episode in 0..episodes {
        let obs = env.reset(Some(seed.wrapping_add(episode as u64)));
        actor.reset(&obs);
        let (mut total, mut length) = (0.0, 0);
        loop {
            let action = actor.act(Some(model), policy_net);
            let step = env.step(&action)?;
            total += step.reward;
            length += 1;
            actor.observe(&action, &step.obs);
            if step.terminated || step.truncated {
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

    #[test]
    fn random_actor_acts_without_a_model_and_planner_actor_falls_back_to_random_until_weights_arrive() {
        let device = wm_backend::DeviceSpec::Cpu.init().expect("flex");
        for policy in [
            CollectPolicy::Random,
            CollectPolicy::Planner(wm_plan::PlannerConfig::cem()),
            CollectPolicy::Actor(wm_agent::ActorCriticConfig::default()),
        ] {
            let mut actor = Actor::new(&policy, 4, Space::Discrete { n: 2 }, 0, device.clone(), true);
            actor.reset(&[0.0; 4]);
            let action = actor.act(None, None);
            assert!(matches!(action, Action::Discrete(0 | 1)), "{action:?}");
        }
    }
}
