//! `KickedPendulum-v0`: Pendulum-v1's physics with random torque kicks, so that the next
//! angular velocity has three separate modes.

use rand::{Rng, RngCore};

use crate::episode::{EpisodeClock, ResetRng};
use crate::error::EnvError;
use crate::pendulum::angle_normalize;
use crate::space::{Action, Space};
use crate::stochastic::{Mode, NoiseRng, StochasticTransition, check_parameter, check_width};
use crate::{Env, PENDULUM_MAX_EPISODE_STEPS, Step};

/// Gymnasium-style id of [`KickedPendulum`].
pub const KICKED_PENDULUM_ID: &str = "KickedPendulum-v0";

/// Pendulum-v1's constants (`g = 10`, `m = l = 1`, `dt = 0.05`, `|u| <= 2`, `|ω| <= 8`).
const MAX_TORQUE: f32 = 2.0;
const MAX_SPEED: f64 = 8.0;
const DT: f64 = 0.05;
const GRAVITY_COEFFICIENT: f64 = 3.0 * 10.0 / 2.0; // 3g / (2l)
const TORQUE_COEFFICIENT: f64 = 3.0; // 3 / (m l²)

/// Parameters of [`KickedPendulum`]. [`Default`]: `kick_probability = 0.5`,
/// `kick_torque = 3`.
///
/// With the defaults the next state has three modes of weights ½ (no kick), ¼ (`+k`) and
/// ¼ (`-k`), unequal so that a model that spreads mass evenly is told apart from one that
/// matches the weights; a kick moves the next angular velocity by `3·k·dt = 0.45` rad/s,
/// 1.5 times what the full actuator torque (2) changes in one step (0.3 rad/s), so the modes
/// are far apart next to the control's own effect while the actuator can still correct them
/// over a few steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KickedPendulumParams {
    /// `p`, the probability of a kick at each step (in `[0, 1]`).
    pub kick_probability: f64,
    /// `k`, the magnitude of a kick, a torque added to the (clipped) action (`>= 0`).
    pub kick_torque: f64,
}

impl Default for KickedPendulumParams {
    fn default() -> Self {
        Self {
            kick_probability: 0.5,
            kick_torque: 3.0,
        }
    }
}

impl KickedPendulumParams {
    /// Checks `kick_probability` in `[0, 1]` and `kick_torque` finite and `>= 0`.
    ///
    /// # Errors
    /// [`EnvError::InvalidParameter`] naming the first bad field.
    pub fn validate(&self) -> Result<(), EnvError> {
        let p = self.kick_probability;
        check_parameter(
            KICKED_PENDULUM_ID,
            "kick_probability",
            p,
            (0.0..=1.0).contains(&p),
            "a probability in [0, 1]",
        )?;
        check_parameter(
            KICKED_PENDULUM_ID,
            "kick_torque",
            self.kick_torque,
            self.kick_torque >= 0.0,
            "a finite number >= 0",
        )
    }
}

/// The swing-up pendulum of `Pendulum-v1` (same spaces, reset distribution, reward and time
/// limit) whose torque receives a random kick at every step:
///
/// ```text
/// κ = +k or -k with probability p/2 each, 0 with probability 1 - p
/// u = clip(a, -2, 2)
/// ω' = clip(ω + (3g/(2l)·sin θ + 3/(m l²)·(u + κ))·dt, -8, 8)
/// θ' = θ + ω'·dt
/// ```
///
/// The kick is added after the action is clipped, so it can exceed the actuator's range; the
/// reward `-(θ² + 0.1·ω² + 0.001·u²)` charges the action only. Given `(s, a)` the next state
/// takes at most three values (atoms), so [`StochasticTransition::log_density`] is `None`.
/// The state is stepped in `f64` (not Gymnasium's mixed `f32` arithmetic: there is no
/// Gymnasium twin to match).
#[derive(Clone, Debug)]
pub struct KickedPendulum {
    params: KickedPendulumParams,
    state: [f64; 2],
    clock: EpisodeClock,
    reset_rng: ResetRng,
    noise_rng: NoiseRng,
}

impl Default for KickedPendulum {
    fn default() -> Self {
        Self::new()
    }
}

impl KickedPendulum {
    /// A kicked pendulum with the default parameters. Call [`Env::reset`] before stepping.
    pub fn new() -> Self {
        Self::with_params(KickedPendulumParams::default()).expect("the defaults are valid")
    }

    /// A kicked pendulum with custom parameters.
    ///
    /// # Errors
    /// [`EnvError::InvalidParameter`] if a parameter is out of range.
    pub fn with_params(params: KickedPendulumParams) -> Result<Self, EnvError> {
        params.validate()?;
        Ok(Self {
            params,
            state: [0.0; 2],
            clock: EpisodeClock::new(PENDULUM_MAX_EPISODE_STEPS),
            reset_rng: ResetRng::default(),
            noise_rng: NoiseRng::default(),
        })
    }

    /// The parameters this pendulum steps with.
    pub fn params(&self) -> &KickedPendulumParams {
        &self.params
    }

    /// The internal `f64` state `[theta, theta_dot]` (`theta` not wrapped).
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Sets the state and starts a new episode from it; returns its observation.
    pub fn set_state(&mut self, state: [f64; 2]) -> Vec<f32> {
        self.state = state;
        self.clock.restart();
        observation(state)
    }

    /// The clipped torque of a valid action; NaN and wrong shapes are rejected.
    fn torque(&self, action: &Action) -> Result<f64, EnvError> {
        match action {
            Action::Continuous(values) if values.len() == 1 && !values[0].is_nan() => {
                Ok(f64::from(values[0].clamp(-MAX_TORQUE, MAX_TORQUE)))
            }
            _ => Err(EnvError::InvalidAction {
                env_id: KICKED_PENDULUM_ID.to_string(),
                action: action.clone(),
                space: self.action_space(),
            }),
        }
    }

    /// A kick `κ ∈ {0, +k, -k}`.
    fn draw_kick(&self, rng: &mut dyn RngCore) -> f64 {
        if rng.random_bool(self.params.kick_probability) {
            if rng.random_bool(0.5) {
                self.params.kick_torque
            } else {
                -self.params.kick_torque
            }
        } else {
            0.0
        }
    }
}

/// `[cos θ, sin θ, ω]`.
fn observation([theta, theta_dot]: [f64; 2]) -> Vec<f32> {
    vec![theta.cos() as f32, theta.sin() as f32, theta_dot as f32]
}

/// The state `[atan2(sin, cos), ω]` of an observation.
fn state_of(obs: &[f32]) -> [f64; 2] {
    [
        f64::from(obs[1]).atan2(f64::from(obs[0])),
        f64::from(obs[2]),
    ]
}

/// One step of the pendulum under torque `u + kick`.
fn dynamics([theta, theta_dot]: [f64; 2], u: f64, kick: f64) -> [f64; 2] {
    let acceleration = GRAVITY_COEFFICIENT * theta.sin() + TORQUE_COEFFICIENT * (u + kick);
    let new_theta_dot = (theta_dot + acceleration * DT).clamp(-MAX_SPEED, MAX_SPEED);
    [theta + new_theta_dot * DT, new_theta_dot]
}

impl Env for KickedPendulum {
    fn id(&self) -> &str {
        KICKED_PENDULUM_ID
    }

    /// `Box(low=[-1, -1, -8], high=[1, 1, 8])`, as Pendulum-v1.
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

    /// Pendulum-v1's reset (`theta` uniform in `[-pi, pi)`, `theta_dot` in `[-1, 1)` from
    /// the same PCG64 stream, so the same first state for the same seed); `Some(seed)` also
    /// reseeds the kicks.
    fn reset(&mut self, seed: Option<u64>) -> Vec<f32> {
        let generator = self.reset_rng.generator(seed);
        let theta = generator.uniform(-std::f64::consts::PI, std::f64::consts::PI);
        let theta_dot = generator.uniform(-1.0, 1.0);
        self.noise_rng.reseed(seed);
        self.set_state([theta, theta_dot])
    }

    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let u = self.torque(action)?;
        self.clock.check_can_step(KICKED_PENDULUM_ID)?;
        let [theta, theta_dot] = self.state;
        let costs = angle_normalize(theta).powi(2) + 0.1 * theta_dot.powi(2) + 0.001 * u * u;
        let mut rng = std::mem::take(&mut self.noise_rng);
        let kick = self.draw_kick(rng.generator());
        self.noise_rng = rng;
        self.state = dynamics(self.state, u, kick);
        let truncated = self.clock.record_step(false);
        Ok(Step {
            obs: observation(self.state),
            reward: -costs,
            terminated: false,
            truncated,
        })
    }
}

impl StochasticTransition for KickedPendulum {
    /// From the state `θ = atan2(sin, cos)`, `ω` of the observation.
    fn sample_next(
        &self,
        obs: &[f32],
        action: &Action,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>, EnvError> {
        check_width(KICKED_PENDULUM_ID, obs, 3)?;
        let u = self.torque(action)?;
        let kick = self.draw_kick(rng);
        Ok(observation(dynamics(state_of(obs), u, kick)))
    }

    /// Always `None`: the next state takes at most three values.
    fn log_density(
        &self,
        obs: &[f32],
        action: &Action,
        next_obs: &[f32],
    ) -> Result<Option<f64>, EnvError> {
        check_width(KICKED_PENDULUM_ID, obs, 3)?;
        check_width(KICKED_PENDULUM_ID, next_obs, 3)?;
        self.torque(action)?;
        Ok(None)
    }

    /// The three atoms: no kick (weight `1 - p`), `-k` and `+k` (`p/2` each); atoms of zero
    /// weight are left out and atoms that coincide (at the speed limit, or with `k = 0`) merged.
    fn modes(&self, obs: &[f32], action: &Action) -> Result<Vec<Mode>, EnvError> {
        check_width(KICKED_PENDULUM_ID, obs, 3)?;
        let u = self.torque(action)?;
        let state = state_of(obs);
        let (p, k) = (self.params.kick_probability, self.params.kick_torque);
        let mut modes: Vec<Mode> = Vec::with_capacity(3);
        for (kick, weight) in [(0.0, 1.0 - p), (-k, p / 2.0), (k, p / 2.0)] {
            if weight == 0.0 {
                continue;
            }
            let center = observation(dynamics(state, u, kick));
            match modes.iter_mut().find(|mode| mode.center == center) {
                Some(mode) => mode.weight += weight,
                None => modes.push(Mode { center, weight }),
            }
        }
        Ok(modes)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::stochastic::test_support::assert_fraction_close;
    use crate::stochastic::{ks_critical_two_sample, ks_statistic_two_sample};

    fn torque(u: f32) -> Action {
        Action::Continuous(vec![u])
    }

    #[test]
    fn modes_are_three_atoms_a_kick_apart_with_weights_half_quarter_quarter() {
        let env = KickedPendulum::new();
        let obs = observation([0.4, 1.0]);
        let modes = env.modes(&obs, &torque(0.5)).expect("valid");
        assert_eq!(modes.len(), 3);
        assert_eq!(
            modes.iter().map(|m| m.weight).collect::<Vec<_>>(),
            [0.5, 0.25, 0.25]
        );
        // ω' = ω + (15 sin θ + 3(u + κ))·0.05: the kicks move it by ∓3·3·0.05 = ∓0.45.
        let omega = |m: &Mode| f64::from(m.center[2]);
        let theta = f64::from(obs[1]).atan2(f64::from(obs[0]));
        let expected = 1.0 + (15.0 * theta.sin() + 1.5) * 0.05;
        assert!((omega(&modes[0]) - expected).abs() < 1e-6);
        assert!((omega(&modes[0]) - omega(&modes[1]) - 0.45).abs() < 1e-6);
        assert!((omega(&modes[2]) - omega(&modes[0]) - 0.45).abs() < 1e-6);
    }

    #[test]
    fn samples_fall_on_the_atoms_with_the_atoms_weights() {
        let n = 20_000;
        let env = KickedPendulum::new();
        let obs = observation([-2.0, 0.3]);
        let action = torque(-1.0);
        let modes = env.modes(&obs, &action).expect("valid");
        let mut counts = [0usize; 3];
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..n {
            let next = env.sample_next(&obs, &action, &mut rng).expect("valid");
            let index = modes
                .iter()
                .position(|mode| mode.center == next)
                .expect("every sample is one of the atoms");
            counts[index] += 1;
        }
        for (mode, count) in modes.iter().zip(counts) {
            assert_fraction_close("atom", count, n, mode.weight);
        }
    }

    #[test]
    fn step_follows_the_same_law_as_sample_next() {
        // Two-sample KS at α = 0.01 on the next angular velocity (discrete here, which makes
        // the asymptotic test conservative), between one step per seed and the sampler.
        let alpha = 0.01;
        let n = 4000;
        let mut env = KickedPendulum::new();
        let state = [1.0, -0.5];
        let stepped: Vec<f64> = (0..n as u64)
            .map(|seed| {
                env.reset(Some(seed));
                env.set_state(state);
                f64::from(env.step(&torque(1.0)).expect("valid").obs[2])
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let sampled: Vec<f64> = (0..n)
            .map(|_| {
                f64::from(
                    env.sample_next(&observation(state), &torque(1.0), &mut rng)
                        .expect("valid")[2],
                )
            })
            .collect();
        let statistic = ks_statistic_two_sample(&stepped, &sampled);
        assert!(
            statistic < ks_critical_two_sample(alpha, n, n),
            "D = {statistic}"
        );
        // Power: without kicks the law differs and the test rejects it.
        let calm = KickedPendulum::with_params(KickedPendulumParams {
            kick_probability: 0.0,
            kick_torque: 3.0,
        })
        .expect("valid");
        let unkicked: Vec<f64> = (0..n)
            .map(|_| {
                f64::from(
                    calm.sample_next(&observation(state), &torque(1.0), &mut rng)
                        .expect("valid")[2],
                )
            })
            .collect();
        assert!(ks_statistic_two_sample(&stepped, &unkicked) > ks_critical_two_sample(alpha, n, n));
    }

    #[test]
    fn without_kicks_it_steps_like_pendulum_v1() {
        let mut kicked = KickedPendulum::with_params(KickedPendulumParams {
            kick_probability: 0.0,
            kick_torque: 3.0,
        })
        .expect("valid");
        let mut plain = crate::Pendulum::new();
        assert_eq!(kicked.reset(Some(3)), plain.reset(Some(3)));
        for step in 0..50 {
            let action = torque(((step % 7) as f32 - 3.0) * 0.8);
            let a = kicked.step(&action).expect("valid");
            let b = plain.step(&action).expect("valid");
            for (x, y) in a.obs.iter().zip(&b.obs) {
                assert!((x - y).abs() < 1e-5, "step {step}: {a:?} vs {b:?}");
            }
            assert!((a.reward - b.reward).abs() < 1e-5);
        }
    }

    #[test]
    fn same_seed_gives_the_same_episode() {
        let run = |seed| {
            let mut env = KickedPendulum::new();
            let mut trace = vec![env.reset(Some(seed))];
            for _ in 0..20 {
                trace.push(env.step(&torque(0.0)).expect("valid").obs);
            }
            trace
        };
        assert_eq!(run(8), run(8));
        assert_ne!(run(8), run(9));
    }

    #[test]
    fn invalid_parameters_are_errors() {
        let error = KickedPendulum::with_params(KickedPendulumParams {
            kick_probability: 1.5,
            kick_torque: 3.0,
        })
        .expect_err("p > 1");
        assert_eq!(
            error.to_string(),
            "KickedPendulum-v0: parameter `kick_probability` must be a probability in [0, 1], got 1.5"
        );
        assert!(
            KickedPendulum::with_params(KickedPendulumParams {
                kick_probability: 0.5,
                kick_torque: -1.0,
            })
            .is_err()
        );
    }
}
