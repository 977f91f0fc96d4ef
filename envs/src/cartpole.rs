//! `CartPole-v1`, step for step the same as Gymnasium 1.x's `CartPoleEnv` under `TimeLimit(500)`.

use crate::episode::{EpisodeClock, ResetRng};
use crate::error::EnvError;
use crate::space::{Action, Space};
use crate::{Env, Step};

/// Gymnasium id of [`CartPole`].
pub const CARTPOLE_ID: &str = "CartPole-v1";
/// `max_episode_steps` Gymnasium registers for `CartPole-v1`.
pub const CARTPOLE_MAX_EPISODE_STEPS: usize = 500;

/// Physical constants of [`CartPole`]. [`Default`] gives Gymnasium's values.
///
/// `total_mass` and `polemass_length` are derived quantities in Gymnasium
/// (`masspole + masscart` and `masspole * length`); they are fields here so that variants of
/// the environment, such as gym-rs 0.3's `polemass_length = masspole + length`, can be
/// reproduced and told apart in tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CartPoleParams {
    /// Gravitational acceleration (m/s²).
    pub gravity: f64,
    /// Mass of the cart (kg).
    pub masscart: f64,
    /// Mass of the pole (kg).
    pub masspole: f64,
    /// Cart plus pole mass; Gymnasium: `masspole + masscart`.
    pub total_mass: f64,
    /// Half the pole's length (m).
    pub length: f64,
    /// Gymnasium: `masspole * length`.
    pub polemass_length: f64,
    /// Magnitude of the force applied by either action (N).
    pub force_mag: f64,
    /// Seconds between state updates (explicit Euler integration).
    pub tau: f64,
    /// The episode terminates when `|theta|` exceeds this (radians; 12 degrees).
    pub theta_threshold_radians: f64,
    /// The episode terminates when `|x|` exceeds this (m).
    pub x_threshold: f64,
}

impl Default for CartPoleParams {
    fn default() -> Self {
        let masscart = 1.0;
        let masspole = 0.1;
        let length = 0.5;
        CartPoleParams {
            gravity: 9.8,
            masscart,
            masspole,
            total_mass: masspole + masscart,
            length,
            polemass_length: masspole * length,
            force_mag: 10.0,
            tau: 0.02,
            // Same operation order as Python's `12 * 2 * math.pi / 360`, so the same bits.
            theta_threshold_radians: 24.0 * std::f64::consts::PI / 360.0,
            x_threshold: 2.4,
        }
    }
}

/// The cart-pole balancing task: push a cart left (action 0) or right (action 1) to keep a
/// pole upright. Reward 1.0 every step, including the terminating one. Terminates when the
/// cart leaves `[-2.4, 2.4]` or the pole tilts more than 12°; truncated at step 500.
///
/// Observation `[x, x_dot, theta, theta_dot]` as `f32`; the internal state is `f64`, as in
/// Gymnasium (see [`CartPole::state`]).
#[derive(Clone, Debug)]
pub struct CartPole {
    params: CartPoleParams,
    state: [f64; 4],
    clock: EpisodeClock,
    reset_rng: ResetRng,
}

impl Default for CartPole {
    fn default() -> Self {
        Self::new()
    }
}

impl CartPole {
    /// A `CartPole-v1` with Gymnasium's constants. Call [`Env::reset`] before stepping.
    pub fn new() -> Self {
        Self::with_params(CartPoleParams::default())
    }

    /// A cart-pole with custom physical constants (still 500-step truncation and id `CartPole-v1`).
    pub fn with_params(params: CartPoleParams) -> Self {
        CartPole {
            params,
            state: [0.0; 4],
            clock: EpisodeClock::new(CARTPOLE_MAX_EPISODE_STEPS),
            reset_rng: ResetRng::default(),
        }
    }

    /// The constants this environment steps with.
    pub fn params(&self) -> &CartPoleParams {
        &self.params
    }

    /// The internal `f64` state `[x, x_dot, theta, theta_dot]` (Gymnasium's `env.unwrapped.state`).
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Overwrites the internal state and starts a new episode from it (the step counter of the
    /// time limit restarts at 0), like `reset()` followed by assigning `env.unwrapped.state`.
    /// Returns the observation of that state.
    pub fn set_state(&mut self, state: [f64; 4]) -> Vec<f32> {
        self.state = state;
        self.clock.restart();
        self.observation()
    }

    fn observation(&self) -> Vec<f32> {
        self.state.iter().map(|&value| value as f32).collect()
    }

    /// One explicit-Euler step of Gymnasium's dynamics; returns the new state.
    fn dynamics(&self, push_right: bool) -> [f64; 4] {
        let p = &self.params;
        let force = if push_right {
            p.force_mag
        } else {
            -p.force_mag
        };
        euler_step(p, self.state, force)
    }

    fn is_terminal(&self) -> bool {
        is_terminal(&self.params, self.state)
    }
}

/// One explicit-Euler step of Gymnasium's cart-pole dynamics from `state` under a horizontal
/// `force` (N) on the cart; returns the new state. The expressions keep Gymnasium's operation
/// order so that every `f64` matches bit for bit when `force` is `±force_mag`. Other forces are
/// what the gusty variant adds (see `gusty_cartpole`).
pub(crate) fn euler_step(p: &CartPoleParams, state: [f64; 4], force: f64) -> [f64; 4] {
    let [x, x_dot, theta, theta_dot] = state;
    let costheta = theta.cos();
    let sintheta = theta.sin();
    let temp = (force + p.polemass_length * (theta_dot * theta_dot) * sintheta) / p.total_mass;
    let thetaacc = (p.gravity * sintheta - costheta * temp)
        / (p.length * (4.0 / 3.0 - p.masspole * (costheta * costheta) / p.total_mass));
    let xacc = temp - p.polemass_length * thetaacc * costheta / p.total_mass;
    [
        x + p.tau * x_dot,
        x_dot + p.tau * xacc,
        theta + p.tau * theta_dot,
        theta_dot + p.tau * thetaacc,
    ]
}

/// Gymnasium's termination: the cart left `[-x_threshold, x_threshold]` or the pole tilted
/// past `theta_threshold_radians`.
pub(crate) fn is_terminal(p: &CartPoleParams, state: [f64; 4]) -> bool {
    let [x, _, theta, _] = state;
    x < -p.x_threshold
        || x > p.x_threshold
        || theta < -p.theta_threshold_radians
        || theta > p.theta_threshold_radians
}

impl Env for CartPole {
    fn id(&self) -> &str {
        CARTPOLE_ID
    }

    /// `Box(low=-high, high)` with `high = [4.8, inf, 0.41887903, inf]` (twice the thresholds).
    fn observation_space(&self) -> Space {
        let high = [
            (self.params.x_threshold * 2.0) as f32,
            f32::INFINITY,
            (self.params.theta_threshold_radians * 2.0) as f32,
            f32::INFINITY,
        ];
        Space::Box {
            low: high.iter().map(|h| -h).collect(),
            high: high.to_vec(),
        }
    }

    /// `Discrete(2)`: 0 pushes left, 1 pushes right.
    fn action_space(&self) -> Space {
        Space::Discrete { n: 2 }
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.clock.max_episode_steps())
    }

    /// Each of the four state values uniform in `[-0.05, 0.05)`, drawn from NumPy's PCG64
    /// stream exactly as Gymnasium does, so `reset(Some(seed))` gives Gymnasium's state.
    fn reset(&mut self, seed: Option<u64>) -> Vec<f32> {
        let generator = self.reset_rng.generator(seed);
        let state = std::array::from_fn(|_| generator.uniform(-0.05, 0.05));
        self.set_state(state)
    }

    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let push_right = match action {
            Action::Discrete(0) => false,
            Action::Discrete(1) => true,
            _ => {
                return Err(EnvError::InvalidAction {
                    env_id: CARTPOLE_ID.to_string(),
                    action: action.clone(),
                    space: self.action_space(),
                });
            }
        };
        self.clock.check_can_step(CARTPOLE_ID)?;
        self.state = self.dynamics(push_right);
        let terminated = self.is_terminal();
        let truncated = self.clock.record_step(terminated);
        Ok(Step {
            obs: self.observation(),
            reward: 1.0,
            terminated,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_action_is_rejected() {
        let mut env = CartPole::new();
        env.reset(Some(0));
        let error = env
            .step(&Action::Discrete(3))
            .expect_err("3 is not in Discrete(2)");
        assert_eq!(
            error.to_string(),
            "action Discrete(3) is outside Discrete(2) for CartPole-v1"
        );
        assert!(env.step(&Action::Continuous(vec![1.0])).is_err());
        assert!(
            env.step(&Action::Discrete(1)).is_ok(),
            "a rejected action leaves the episode running"
        );
    }

    #[test]
    fn step_before_reset_is_an_error() {
        let error = CartPole::new()
            .step(&Action::Discrete(0))
            .expect_err("not reset yet");
        assert!(matches!(error, EnvError::NotReset { .. }));
    }

    #[test]
    fn step_after_termination_is_an_error() {
        let mut env = CartPole::new();
        env.reset(Some(3));
        let mut last = env.step(&Action::Discrete(1)).expect("first step is valid");
        while !last.terminated {
            last = env
                .step(&Action::Discrete(1))
                .expect("episode still running");
        }
        assert_eq!(last.reward, 1.0, "the terminating step is rewarded too");
        let error = env.step(&Action::Discrete(1)).expect_err("episode ended");
        assert!(error.to_string().contains("call reset"), "{error}");
        env.reset(None);
        assert!(env.step(&Action::Discrete(1)).is_ok());
    }

    #[test]
    fn reset_with_same_seed_gives_same_state() {
        let mut env = CartPole::new();
        let first = env.reset(Some(42));
        let first_state = env.state();
        let continued = env.reset(None);
        assert_ne!(first, continued, "an unseeded reset continues the stream");
        assert_eq!(env.reset(Some(42)), first);
        assert_eq!(env.state(), first_state);
        assert!(first_state.iter().all(|v| (-0.05..0.05).contains(v)));
    }

    #[test]
    fn truncates_at_500_steps_with_balancing_policy() {
        let mut env = CartPole::new();
        let mut obs = env.reset(Some(7));
        for step in 1..=500 {
            let action = Action::Discrete(usize::from(obs[2] + obs[3] > 0.0));
            let result = env
                .step(&action)
                .expect("balancing keeps the episode running");
            assert!(!result.terminated, "fell at step {step}");
            assert_eq!(result.truncated, step == 500);
            obs = result.obs;
        }
    }

    #[test]
    fn set_state_restarts_the_time_limit() {
        let mut env = CartPole::new();
        env.reset(Some(0));
        let obs = env.set_state([0.1, -0.2, 0.03, 0.4]);
        assert_eq!(obs, vec![0.1f32, -0.2, 0.03, 0.4]);
        assert_eq!(env.state(), [0.1, -0.2, 0.03, 0.4]);
        assert!(env.step(&Action::Discrete(0)).is_ok());
    }

    #[test]
    fn observation_space_bounds_are_twice_the_thresholds() {
        let Space::Box { high, .. } = CartPole::new().observation_space() else {
            panic!("box")
        };
        assert_eq!(high[0], 4.8);
        assert_eq!(high[2], 0.41887903);
    }
}
