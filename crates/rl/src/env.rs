//! [`RealEnv`] and [`ImaginedEnv`]: burn-rl [`Environment`]s.

use burn::tensor::{Device, Tensor, TensorData};
use burn_rl::{Environment, StepResult};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wm_envs::{Action, CARTPOLE_MAX_EPISODE_STEPS, PENDULUM_MAX_EPISODE_STEPS, Space};
use wm_imagine::{ModelEnv, WorldModel};

/// An observation, the state type of both environments.
#[derive(Debug, Clone, PartialEq)]
pub struct Obs(pub Vec<f32>);

/// Why an environment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RlError {
    /// An unknown environment name.
    #[error(transparent)]
    Env(#[from] wm_envs::EnvError),
    /// The const episode limit differs from the environment's time limit.
    #[error("{env} is truncated at {actual:?} steps, but this type's MAX_STEPS is {expected}")]
    Limit {
        /// The environment id.
        env: String,
        /// The type's `MAX_STEPS`.
        expected: usize,
        /// The environment's time limit.
        actual: Option<usize>,
    },
    /// No start states, or start states of the wrong width.
    #[error("start states: {0}")]
    Starts(String),
}

/// A built-in environment (CartPole-v1, Pendulum-v1, ...) as a burn-rl [`Environment`];
/// `MAX_STEPS` must be its time limit. The first reset after `new` uses `seed`, each later one
/// the next seed, so a run of episodes is reproducible.
pub struct RealEnv<const MAX_STEPS: usize> {
    env: Box<dyn wm_envs::Env>,
    obs: Vec<f32>,
    next_seed: u64,
}

/// CartPole-v1 for burn-rl.
pub type RealCartPole = RealEnv<CARTPOLE_MAX_EPISODE_STEPS>;
/// Pendulum-v1 for burn-rl.
pub type RealPendulum = RealEnv<PENDULUM_MAX_EPISODE_STEPS>;

impl<const MAX_STEPS: usize> RealEnv<MAX_STEPS> {
    /// The environment `name` (`wm env list`), reset with `seed`.
    ///
    /// # Errors
    /// [`RlError::Env`] for an unknown name, [`RlError::Limit`] if its time limit is not
    /// `MAX_STEPS`.
    pub fn new(name: &str, seed: u64) -> Result<Self, RlError> {
        let env = wm_envs::make(name)?;
        if env.max_episode_steps() != Some(MAX_STEPS) {
            return Err(RlError::Limit {
                env: env.id().to_string(),
                expected: MAX_STEPS,
                actual: env.max_episode_steps(),
            });
        }
        let mut real = Self {
            env,
            obs: Vec::new(),
            next_seed: seed,
        };
        real.reset();
        Ok(real)
    }

    /// The action space.
    pub fn action_space(&self) -> Space {
        self.env.action_space()
    }
}

impl<const MAX_STEPS: usize> Environment for RealEnv<MAX_STEPS> {
    type State = Obs;
    type Action = Action;
    const MAX_STEPS: usize = MAX_STEPS;

    fn state(&self) -> Obs {
        Obs(self.obs.clone())
    }

    /// One step of the real environment.
    ///
    /// # Panics
    /// If the action does not belong to the action space (burn-rl's `step` cannot return an
    /// error; the learners here only produce valid actions).
    fn step(&mut self, action: Action) -> StepResult<Obs> {
        let step = self
            .env
            .step(&action)
            .unwrap_or_else(|error| panic!("RealEnv::step: {error}"));
        self.obs = step.obs.clone();
        StepResult {
            next_state: Obs(step.obs),
            reward: step.reward,
            done: step.terminated,
            truncated: step.truncated,
        }
    }

    fn reset(&mut self) {
        self.obs = self.env.reset(Some(self.next_seed));
        self.next_seed = self.next_seed.wrapping_add(1);
    }
}

/// A trained world model as a burn-rl [`Environment`] (batch 1): each episode starts from one
/// of the given real start observations (chosen uniformly by a seeded generator), then every
/// step is the model's prediction. An episode ends when the model's continue probability drops
/// below 0.5 (`done`) or after `MAX_STEPS` steps (`truncated`). With `sample: false` the
/// model's central prediction is taken (deterministic), with `sample: true` a sample from the
/// device RNG.
pub struct ImaginedEnv<M: WorldModel, const MAX_STEPS: usize> {
    env: ModelEnv<M>,
    starts: Vec<Vec<f32>>,
    rng: ChaCha8Rng,
    obs: Vec<f32>,
    t: usize,
    device: Device,
}

/// CartPole-v1's episode limit over a learned model.
pub type ImaginedCartPole<M> = ImaginedEnv<M, CARTPOLE_MAX_EPISODE_STEPS>;

impl<M: WorldModel, const MAX_STEPS: usize> ImaginedEnv<M, MAX_STEPS> {
    /// Imagination over `model` on `device` from `starts` (real observations, e.g. the real
    /// environment's resets or replayed states); `seed` drives the choice of start state.
    ///
    /// # Errors
    /// [`RlError::Starts`] if `starts` is empty or a start is not `model.obs_dim()` wide.
    pub fn new(
        model: M,
        starts: Vec<Vec<f32>>,
        sample: bool,
        seed: u64,
        device: Device,
    ) -> Result<Self, RlError> {
        let o = model.obs_dim();
        if starts.is_empty() {
            return Err(RlError::Starts("none given".into()));
        }
        if let Some(bad) = starts.iter().find(|s| s.len() != o) {
            return Err(RlError::Starts(format!(
                "a start of width {}, but the model's observations are {o} wide",
                bad.len()
            )));
        }
        let mut env = Self {
            env: ModelEnv::new(model, sample),
            starts,
            rng: ChaCha8Rng::seed_from_u64(seed),
            obs: Vec::new(),
            t: 0,
            device,
        };
        env.reset();
        Ok(env)
    }

    /// The world model.
    pub fn model(&self) -> &M {
        self.env.model()
    }

    /// Steps taken in the current episode.
    pub fn t(&self) -> usize {
        self.t
    }
}

impl<M: WorldModel, const MAX_STEPS: usize> Environment for ImaginedEnv<M, MAX_STEPS> {
    type State = Obs;
    type Action = Action;
    const MAX_STEPS: usize = MAX_STEPS;

    fn state(&self) -> Obs {
        Obs(self.obs.clone())
    }

    /// One imagined step.
    ///
    /// # Panics
    /// If the action's width is not the model's (burn-rl's `step` cannot return an error).
    fn step(&mut self, action: Action) -> StepResult<Obs> {
        let values = action.to_f32_vec();
        let width = values.len();
        let action = Tensor::<2>::from_data(TensorData::new(values, [1, width]), &self.device);
        let step = self.env.step(action);
        self.obs = step
            .obs
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 observations");
        let reward = step
            .reward
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 rewards")[0];
        self.t += 1;
        let done = step.done[0];
        StepResult {
            next_state: Obs(self.obs.clone()),
            reward: f64::from(reward),
            done,
            truncated: !done && self.t >= MAX_STEPS,
        }
    }

    fn reset(&mut self) {
        let start = self.starts[self.rng.random_range(0..self.starts.len())].clone();
        let o = start.len();
        self.env.reset(Tensor::<2>::from_data(
            TensorData::new(start.clone(), [1, o]),
            &self.device,
        ));
        self.obs = start;
        self.t = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wm_models::{ActionSpec, CvaeConfig, ModelSpec, Normalizer};

    #[test]
    fn real_env_follows_the_built_in_environment_and_reseeds_at_each_reset() {
        let mut env = RealCartPole::new("cartpole", 7).expect("cartpole");
        let mut reference = wm_envs::make("cartpole").expect("cartpole");
        assert_eq!(env.state(), Obs(reference.reset(Some(7))));
        let mut steps = 0;
        loop {
            let action = Action::Discrete(steps % 2);
            let ours = env.step(action.clone());
            let theirs = reference.step(&action).expect("valid action");
            assert_eq!(ours.next_state, Obs(theirs.obs), "step {steps}");
            assert_eq!(
                (ours.reward, ours.done, ours.truncated),
                (theirs.reward, theirs.terminated, theirs.truncated)
            );
            steps += 1;
            if ours.done || ours.truncated {
                break;
            }
        }
        // The next episode starts from the next seed.
        env.reset();
        assert_eq!(env.state(), Obs(reference.reset(Some(8))));
        assert_eq!(
            <RealCartPole as Environment>::MAX_STEPS,
            CARTPOLE_MAX_EPISODE_STEPS
        );
        let pendulum = RealPendulum::new("Pendulum-v1", 0).expect("pendulum");
        assert_eq!(pendulum.state().0.len(), 3);
    }

    #[test]
    fn real_env_refuses_an_unknown_name_and_a_limit_that_is_not_the_environments() {
        let error = RealEnv::<100>::new("cartpole", 0)
            .err()
            .expect("a wrong limit");
        assert!(
            error.to_string().contains("truncated at Some(500) steps")
                && error.to_string().contains("MAX_STEPS is 100"),
            "{error}"
        );
        let error = RealCartPole::new("nope", 0).err().expect("an unknown env");
        assert!(error.to_string().contains("nope"), "{error}");
    }

    fn tiny_cvae(device: &Device) -> wm_models::Cvae {
        let spec = ModelSpec {
            obs_dim: 4,
            action: ActionSpec::Discrete { n: 2 },
        };
        let config = CvaeConfig {
            hidden: vec![8],
            latent_dim: 2,
            ..CvaeConfig::default()
        };
        config.init(&spec, Normalizer::identity(4), device)
    }

    #[test]
    fn imagined_env_starts_from_a_given_state_steps_the_model_and_truncates_at_max_steps() {
        let device = wm_backend::test_device();
        let model = tiny_cvae(&device);
        let start = vec![0.01f32, -0.02, 0.03, 0.0];
        let mut env =
            ImaginedEnv::<_, 3>::new(model.clone(), vec![start.clone()], false, 0, device.clone())
                .expect("valid starts");
        assert_eq!(env.state(), Obs(start.clone()));
        // The same steps as the model's own batched environment, central predictions.
        let mut reference = ModelEnv::new(model, false);
        reference.reset(Tensor::<2>::from_data(
            TensorData::new(start, [1, 4]),
            &device,
        ));
        for t in 1..=3 {
            let ours = env.step(Action::Discrete(1));
            let theirs = reference.step(Tensor::from_data(
                TensorData::new(vec![1.0f32], [1, 1]),
                &device,
            ));
            let obs: Vec<f32> = theirs.obs.into_data().try_to_vec().expect("f32");
            let reward: Vec<f32> = theirs.reward.into_data().try_to_vec().expect("f32");
            assert_eq!(ours.next_state, Obs(obs), "step {t}");
            assert_eq!(ours.reward, f64::from(reward[0]), "step {t}");
            assert_eq!(ours.done, theirs.done[0], "step {t}");
            assert_eq!(ours.truncated, !ours.done && t == 3, "step {t}");
            assert_eq!(env.t(), t);
        }
        env.reset();
        assert_eq!(env.t(), 0);
    }

    #[test]
    fn imagined_env_refuses_missing_or_misshapen_start_states() {
        let device = wm_backend::test_device();
        let none = ImaginedCartPole::new(tiny_cvae(&device), vec![], false, 0, device.clone());
        assert!(
            none.err()
                .expect("no starts")
                .to_string()
                .contains("none given")
        );
        let narrow =
            ImaginedCartPole::new(tiny_cvae(&device), vec![vec![0.0; 3]], false, 0, device);
        let error = narrow.err().expect("width 3");
        assert!(
            error.to_string().contains("width 3") && error.to_string().contains("4 wide"),
            "{error}"
        );
    }
}
