//! `Pendulum-v1`, step for step the same as Gymnasium 1.x's `PendulumEnv` under `TimeLimit(200)`.

use std::f64::consts::PI;
use std::hint::black_box;

use crate::episode::{EpisodeClock, ResetRng};
use crate::error::EnvError;
use crate::space::{Action, Space};
use crate::{Env, Step};

/// Gymnasium id of [`Pendulum`].
pub const PENDULUM_ID: &str = "Pendulum-v1";
/// `max_episode_steps` Gymnasium registers for `Pendulum-v1`.
pub const PENDULUM_MAX_EPISODE_STEPS: usize = 200;

/// Largest torque magnitude; actions are clipped to `[-MAX_TORQUE, MAX_TORQUE]`.
const MAX_TORQUE: f32 = 2.0;
/// Angular velocity is clipped to `[-MAX_SPEED, MAX_SPEED]` (rad/s).
const MAX_SPEED: f64 = 8.0;
/// Seconds per step.
const DT: f64 = 0.05;
/// Gravity (Gymnasium's default `g=10.0`).
const GRAVITY: f64 = 10.0;
/// Pendulum mass and length.
const MASS: f64 = 1.0;
const LENGTH: f64 = 1.0;

/// The inverted pendulum swing-up: apply a torque in `[-2, 2]` to swing a pendulum upright and
/// keep it there. Reward `-(angle² + 0.1·ω² + 0.001·u²)`, never terminates, truncated at step 200.
///
/// Observation `[cos θ, sin θ, ω]` as `f32`; internal state `[θ, ω]` as `f64` (see
/// [`Pendulum::state`]). Out-of-range torques are clipped, as Gymnasium does, not rejected.
#[derive(Clone, Debug)]
pub struct Pendulum {
    state: [f64; 2],
    clock: EpisodeClock,
    reset_rng: ResetRng,
}

impl Default for Pendulum {
    fn default() -> Self {
        Self::new()
    }
}

/// Gymnasium's `angle_normalize`: `((x + pi) % (2 * pi)) - pi` with NumPy's floored modulo
/// (the result takes the divisor's sign), giving an angle in `[-pi, pi)`.
pub(crate) fn angle_normalize(x: f64) -> f64 {
    numpy_floor_mod(x + PI, 2.0 * PI) - PI
}

/// `np.remainder` for `f64` (`npy_divmod`): C `fmod`, shifted by the divisor when the signs differ.
fn numpy_floor_mod(a: f64, b: f64) -> f64 {
    let remainder = a % b; // Rust's `%` on floats is C's fmod
    if remainder == 0.0 {
        0.0f64.copysign(b)
    } else if (b < 0.0) != (remainder < 0.0) {
        remainder + b
    } else {
        remainder
    }
}

/// `x ** 2` on a NumPy `float64` scalar, which calls libm `pow` (not `x * x`): the two differ
/// in the last bit for about 0.1% of inputs. `black_box` stops LLVM from rewriting it as `x * x`.
fn numpy_square_f64(x: f64) -> f64 {
    x.powf(black_box(2.0))
}

/// `u ** 2` on a NumPy `float32` scalar: libm `powf`, for the same reason.
fn numpy_square_f32(u: f32) -> f32 {
    u.powf(black_box(2.0))
}

impl Pendulum {
    /// A `Pendulum-v1`. Call [`Env::reset`] before stepping.
    pub fn new() -> Self {
        Pendulum {
            state: [0.0; 2],
            clock: EpisodeClock::new(PENDULUM_MAX_EPISODE_STEPS),
            reset_rng: ResetRng::default(),
        }
    }

    /// The internal `f64` state `[theta, theta_dot]` (Gymnasium's `env.unwrapped.state`);
    /// `theta` is not wrapped into `[-pi, pi)`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Overwrites the internal state and starts a new episode from it (the step counter of the
    /// time limit restarts at 0), like `reset()` followed by assigning `env.unwrapped.state`.
    /// Returns the observation of that state.
    pub fn set_state(&mut self, state: [f64; 2]) -> Vec<f32> {
        self.state = state;
        self.clock.restart();
        self.observation()
    }

    fn observation(&self) -> Vec<f32> {
        let [theta, theta_dot] = self.state;
        vec![theta.cos() as f32, theta.sin() as f32, theta_dot as f32]
    }

    /// Reads the torque of a valid action; NaN and wrong shapes are rejected.
    fn torque(&self, action: &Action) -> Result<f32, EnvError> {
        match action {
            Action::Continuous(values) if values.len() == 1 && !values[0].is_nan() => Ok(values[0]),
            _ => Err(EnvError::InvalidAction {
                env_id: PENDULUM_ID.to_string(),
                action: action.clone(),
                space: self.action_space(),
            }),
        }
    }
}

impl Env for Pendulum {
    fn id(&self) -> &str {
        PENDULUM_ID
    }

    /// `Box(low=[-1, -1, -8], high=[1, 1, 8])`.
    fn observation_space(&self) -> Space {
        Space::Box {
            low: vec![-1.0, -1.0, -MAX_SPEED as f32],
            high: vec![1.0, 1.0, MAX_SPEED as f32],
        }
    }

    /// `Box(low=[-2], high=[2])`; actions outside it are clipped by `step`, not rejected.
    fn action_space(&self) -> Space {
        Space::Box {
            low: vec![-MAX_TORQUE],
            high: vec![MAX_TORQUE],
        }
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.clock.max_episode_steps())
    }

    /// `theta` uniform in `[-pi, pi)` and `theta_dot` in `[-1, 1)`, drawn from NumPy's PCG64
    /// stream exactly as Gymnasium does, so `reset(Some(seed))` gives Gymnasium's state.
    fn reset(&mut self, seed: Option<u64>) -> Vec<f32> {
        let generator = self.reset_rng.generator(seed);
        let theta = generator.uniform(-PI, PI);
        let theta_dot = generator.uniform(-1.0, 1.0);
        self.set_state([theta, theta_dot])
    }

    /// Gymnasium's `PendulumEnv.step` with NumPy 2's (NEP 50) types: the action is a `float32`
    /// array, so the clipped torque `u` is a `float32` scalar and the Python-float products
    /// `3.0 * u` and `0.001 * u**2` are computed in `float32`, then promoted to `float64` when
    /// added to the `float64` state terms.
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let torque = self.torque(action)?;
        self.clock.check_can_step(PENDULUM_ID)?;
        let [theta, theta_dot] = self.state;
        let u: f32 = torque.clamp(-MAX_TORQUE, MAX_TORQUE);

        let costs = numpy_square_f64(angle_normalize(theta))
            + 0.1 * numpy_square_f64(theta_dot)
            + f64::from(0.001f64 as f32 * numpy_square_f32(u));

        let gravity_coefficient = 3.0 * GRAVITY / (2.0 * LENGTH); // Python floats: f64
        let torque_coefficient = (3.0 / (MASS * (LENGTH * LENGTH))) as f32; // weak Python float times float32
        let new_theta_dot = theta_dot
            + (gravity_coefficient * theta.sin() + f64::from(torque_coefficient * u)) * DT;
        let new_theta_dot = new_theta_dot.clamp(-MAX_SPEED, MAX_SPEED);
        let new_theta = theta + new_theta_dot * DT;
        self.state = [new_theta, new_theta_dot];

        let truncated = self.clock.record_step(false);
        Ok(Step {
            obs: self.observation(),
            reward: -costs,
            terminated: false,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn torque(u: f32) -> Action {
        Action::Continuous(vec![u])
    }

    #[test]
    fn pendulum_clips_torque_to_two() {
        let mut clipped = Pendulum::new();
        let mut at_limit = Pendulum::new();
        clipped.set_state([0.5, 0.1]);
        at_limit.set_state([0.5, 0.1]);
        let over = clipped
            .step(&torque(7.5))
            .expect("out-of-range torques are clipped");
        let limit = at_limit.step(&torque(2.0)).expect("valid torque");
        assert_eq!(over, limit);
        assert_eq!(clipped.state(), at_limit.state());
    }

    #[test]
    fn invalid_action_is_rejected() {
        let mut env = Pendulum::new();
        env.reset(Some(0));
        for action in [
            Action::Discrete(1),
            torque(f32::NAN),
            Action::Continuous(vec![0.0, 0.0]),
        ] {
            let error = env.step(&action).expect_err("malformed action");
            assert!(error.to_string().contains("for Pendulum-v1"), "{error}");
        }
    }

    #[test]
    fn truncates_at_200_steps_then_step_is_an_error() {
        let mut env = Pendulum::new();
        env.reset(Some(1));
        for step in 1..=200 {
            let result = env.step(&torque(0.0)).expect("episode still running");
            assert!(!result.terminated);
            assert_eq!(result.truncated, step == 200);
        }
        let error = env.step(&torque(0.0)).expect_err("episode truncated");
        assert!(matches!(
            error,
            EnvError::EpisodeEnded {
                truncated: true,
                elapsed_steps: 200,
                ..
            }
        ));
    }

    #[test]
    fn reset_with_same_seed_gives_same_state() {
        let mut env = Pendulum::new();
        env.reset(Some(9));
        let state = env.state();
        assert!((-PI..PI).contains(&state[0]) && (-1.0..1.0).contains(&state[1]));
        env.reset(None);
        assert_ne!(env.state(), state);
        env.reset(Some(9));
        assert_eq!(env.state(), state);
    }

    #[test]
    fn angular_velocity_is_clipped_to_eight() {
        let mut env = Pendulum::new();
        env.set_state([1.0, 7.99]);
        env.step(&torque(2.0)).expect("valid torque");
        assert_eq!(env.state()[1], 8.0);
    }

    #[test]
    fn observation_is_cos_sin_and_velocity() {
        let mut env = Pendulum::new();
        let obs = env.set_state([PI / 2.0, -3.0]);
        assert!(obs[0].abs() < 1e-7);
        assert_eq!(obs[1..], [1.0, -3.0]);
    }

    #[test]
    fn reward_at_upright_rest_with_no_torque_is_zero() {
        let mut env = Pendulum::new();
        env.set_state([0.0, 0.0]);
        assert_eq!(env.step(&torque(0.0)).expect("valid").reward, 0.0);
    }

    #[test]
    fn angle_normalize_wraps_into_minus_pi_to_pi() {
        assert_eq!(angle_normalize(0.0), 0.0);
        assert!((angle_normalize(3.0 * PI / 2.0) + PI / 2.0).abs() < 1e-12);
        assert!((angle_normalize(-3.0 * PI / 2.0) - PI / 2.0).abs() < 1e-12);
        assert_eq!(angle_normalize(PI), -PI);
    }
}
