//! `GustyCartPole-v0`: Gymnasium's CartPole-v1 with a random horizontal gust added to every
//! push, drawn from a two-component Gaussian mixture (calm air or a gust).

use rand::{Rng, RngCore};
use rand_distr::{Distribution, StandardNormal};

use crate::cartpole::{euler_step, is_terminal};
use crate::episode::EpisodeClock;
use crate::error::EnvError;
use crate::space::{Action, Space};
use crate::stochastic::{Mode, NoiseRng, StochasticTransition, check_parameter, check_width};
use crate::{CARTPOLE_MAX_EPISODE_STEPS, CartPole, CartPoleParams, Env, Step};

/// Gymnasium-style id of [`GustyCartPole`].
pub const GUSTY_CARTPOLE_ID: &str = "GustyCartPole-v0";

/// Parameters of [`GustyCartPole`]. [`Default`]: Gymnasium's cart-pole constants; calm air
/// `N(0, 0.5²)` with weight 0.7, a gust `N(8, 1²)` (N, towards +x) with weight 0.3.
///
/// With the defaults the two components are 8 standard deviations of the gust apart, so the
/// next cart and pole velocities are clearly bimodal (a gust changes the cart's velocity by
/// about 0.16 m/s in one step, the push by about 0.2 m/s), and their weights are unequal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GustyCartPoleParams {
    /// The cart-pole's physical constants.
    pub cartpole: CartPoleParams,
    /// Probability of the first component (calm), in `[0, 1]`.
    pub calm_weight: f64,
    /// Means of the two components' force (N): calm, gust.
    pub means: [f64; 2],
    /// Standard deviations of the two components' force (N), each `>= 0`.
    pub stds: [f64; 2],
}

impl Default for GustyCartPoleParams {
    fn default() -> Self {
        Self {
            cartpole: CartPoleParams::default(),
            calm_weight: 0.7,
            means: [0.0, 8.0],
            stds: [0.5, 1.0],
        }
    }
}

impl GustyCartPoleParams {
    /// Checks the weight in `[0, 1]`, finite means, finite standard deviations `>= 0`.
    ///
    /// # Errors
    /// [`EnvError::InvalidParameter`] naming the first bad field.
    pub fn validate(&self) -> Result<(), EnvError> {
        let w = self.calm_weight;
        check_parameter(
            GUSTY_CARTPOLE_ID,
            "calm_weight",
            w,
            (0.0..=1.0).contains(&w),
            "a probability in [0, 1]",
        )?;
        for (field, mean) in ["means[0]", "means[1]"].into_iter().zip(self.means) {
            check_parameter(GUSTY_CARTPOLE_ID, field, mean, true, "a finite number")?;
        }
        for (field, std) in ["stds[0]", "stds[1]"].into_iter().zip(self.stds) {
            check_parameter(
                GUSTY_CARTPOLE_ID,
                field,
                std,
                std >= 0.0,
                "a finite number >= 0",
            )?;
        }
        Ok(())
    }

    /// The mixture's density of a gust force `g`, for tests and plots.
    pub fn gust_density(&self, g: f64) -> f64 {
        let normal = |mean: f64, std: f64| {
            let z = (g - mean) / std;
            (-0.5 * z * z).exp() / (std * (2.0 * std::f64::consts::PI).sqrt())
        };
        self.calm_weight * normal(self.means[0], self.stds[0])
            + (1.0 - self.calm_weight) * normal(self.means[1], self.stds[1])
    }
}

/// CartPole-v1 (the same spaces, reset distribution, reward, termination and 500-step time
/// limit, all from [`CartPole`]'s own code) where each step's force is the push `±force_mag`
/// plus a gust
///
/// ```text
/// g ~ w·N(μ_calm, σ_calm²) + (1 - w)·N(μ_gust, σ_gust²)
/// ```
///
/// applied through Gymnasium's explicit-Euler update. The update is affine in the force, so
/// the next state given `(s, a)` is the image of the one-dimensional gust on a line in the
/// state space: bimodal, with no density in R⁴ ([`StochasticTransition::log_density`] is
/// `None`). The base `CartPole` is untouched: with a zero gust this steps bit for bit like it.
#[derive(Clone, Debug)]
pub struct GustyCartPole {
    params: GustyCartPoleParams,
    /// Resets (Gymnasium's initial-state stream) come from the base environment.
    base: CartPole,
    state: [f64; 4],
    clock: EpisodeClock,
    noise_rng: NoiseRng,
}

impl Default for GustyCartPole {
    fn default() -> Self {
        Self::new()
    }
}

impl GustyCartPole {
    /// A gusty cart-pole with the default parameters. Call [`Env::reset`] before stepping.
    pub fn new() -> Self {
        Self::with_params(GustyCartPoleParams::default()).expect("the defaults are valid")
    }

    /// A gusty cart-pole with custom parameters.
    ///
    /// # Errors
    /// [`EnvError::InvalidParameter`] if a parameter is out of range.
    pub fn with_params(params: GustyCartPoleParams) -> Result<Self, EnvError> {
        params.validate()?;
        Ok(Self {
            params,
            base: CartPole::with_params(params.cartpole),
            state: [0.0; 4],
            clock: EpisodeClock::new(CARTPOLE_MAX_EPISODE_STEPS),
            noise_rng: NoiseRng::default(),
        })
    }

    /// The parameters this cart-pole steps with.
    pub fn params(&self) -> &GustyCartPoleParams {
        &self.params
    }

    /// The internal `f64` state `[x, x_dot, theta, theta_dot]`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Sets the state and starts a new episode from it; returns its observation.
    pub fn set_state(&mut self, state: [f64; 4]) -> Vec<f32> {
        self.state = state;
        self.clock.restart();
        state.map(|v| v as f32).to_vec()
    }

    /// The push `±force_mag` of a valid action.
    fn push(&self, action: &Action) -> Result<f64, EnvError> {
        let force_mag = self.params.cartpole.force_mag;
        match action {
            Action::Discrete(0) => Ok(-force_mag),
            Action::Discrete(1) => Ok(force_mag),
            _ => Err(EnvError::InvalidAction {
                env_id: GUSTY_CARTPOLE_ID.to_string(),
                action: action.clone(),
                space: Space::Discrete { n: 2 },
            }),
        }
    }

    /// One gust force from the mixture.
    pub fn draw_gust(&self, rng: &mut dyn RngCore) -> f64 {
        let component = usize::from(!rng.random_bool(self.params.calm_weight));
        let noise: f64 = StandardNormal.sample(rng);
        self.params.means[component] + self.params.stds[component] * noise
    }
}

impl Env for GustyCartPole {
    fn id(&self) -> &str {
        GUSTY_CARTPOLE_ID
    }

    /// As CartPole-v1.
    fn observation_space(&self) -> Space {
        self.base.observation_space()
    }

    /// `Discrete(2)`: 0 pushes left, 1 pushes right.
    fn action_space(&self) -> Space {
        Space::Discrete { n: 2 }
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.clock.max_episode_steps())
    }

    /// CartPole-v1's reset (the same first state for the same seed); `Some(seed)` also
    /// reseeds the gusts.
    fn reset(&mut self, seed: Option<u64>) -> Vec<f32> {
        self.base.reset(seed);
        self.noise_rng.reseed(seed);
        self.set_state(self.base.state())
    }

    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let push = self.push(action)?;
        self.clock.check_can_step(GUSTY_CARTPOLE_ID)?;
        let mut rng = std::mem::take(&mut self.noise_rng);
        let gust = self.draw_gust(rng.generator());
        self.noise_rng = rng;
        self.state = euler_step(&self.params.cartpole, self.state, push + gust);
        let terminated = is_terminal(&self.params.cartpole, self.state);
        let truncated = self.clock.record_step(terminated);
        Ok(Step {
            obs: self.state.map(|v| v as f32).to_vec(),
            reward: 1.0,
            terminated,
            truncated,
        })
    }
}

impl StochasticTransition for GustyCartPole {
    fn sample_next(
        &self,
        obs: &[f32],
        action: &Action,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>, EnvError> {
        check_width(GUSTY_CARTPOLE_ID, obs, 4)?;
        let push = self.push(action)?;
        let gust = self.draw_gust(rng);
        let state = std::array::from_fn(|i| f64::from(obs[i]));
        let next = euler_step(&self.params.cartpole, state, push + gust);
        Ok(next.map(|v| v as f32).to_vec())
    }

    /// Always `None`: the next state lies on a line in the 4-D state space.
    fn log_density(
        &self,
        obs: &[f32],
        action: &Action,
        next_obs: &[f32],
    ) -> Result<Option<f64>, EnvError> {
        check_width(GUSTY_CARTPOLE_ID, obs, 4)?;
        check_width(GUSTY_CARTPOLE_ID, next_obs, 4)?;
        self.push(action)?;
        Ok(None)
    }

    /// The next state at each component's mean gust (the mean of that component's image,
    /// since the step is affine in the force), with the components' weights; a component of
    /// zero weight is left out.
    fn modes(&self, obs: &[f32], action: &Action) -> Result<Vec<Mode>, EnvError> {
        check_width(GUSTY_CARTPOLE_ID, obs, 4)?;
        let push = self.push(action)?;
        let state = std::array::from_fn(|i| f64::from(obs[i]));
        let w = self.params.calm_weight;
        Ok([(self.params.means[0], w), (self.params.means[1], 1.0 - w)]
            .into_iter()
            .filter(|&(_, weight)| weight > 0.0)
            .map(|(gust, weight)| Mode {
                center: euler_step(&self.params.cartpole, state, push + gust)
                    .map(|v| v as f32)
                    .to_vec(),
                weight,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::stochastic::test_support::{
        assert_fraction_close, assert_mean_close, assert_variance_close,
    };
    use crate::stochastic::{ks_critical_one_sample, ks_statistic_one_sample, normal_cdf};

    const N: usize = 20_000;

    /// The gust that produced `next` from `state` under `push`, read off the next cart
    /// velocity: it is affine in the force, `x_dot'(F) = x_dot'(0) + F·(x_dot'(1) - x_dot'(0))`.
    fn recovered_gust(p: &CartPoleParams, state: [f64; 4], push: f64, next: &[f32]) -> f64 {
        let at = |force: f64| euler_step(p, state, force)[1];
        let slope = at(1.0) - at(0.0);
        (f64::from(next[1]) - at(push)) / slope
    }

    fn gusts(seed: u64) -> Vec<f64> {
        let env = GustyCartPole::new();
        let state = [0.1f32, -0.3, 0.05, 0.2];
        let state64 = state.map(f64::from);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..N)
            .map(|_| {
                let next = env
                    .sample_next(&state, &Action::Discrete(1), &mut rng)
                    .expect("valid");
                recovered_gust(&env.params.cartpole, state64, 10.0, &next)
            })
            .collect()
    }

    #[test]
    fn gusts_split_into_calm_and_gust_components_with_their_moments() {
        let gusts = gusts(21);
        // The components are 16 calm and 8 gust standard deviations apart; 4 N splits them
        // (a gust below it has probability Φ(-4) = 3e-5).
        let (gust, calm): (Vec<f64>, Vec<f64>) = gusts.iter().partition(|&&g| g > 4.0);
        assert_fraction_close("calm", calm.len(), N, 0.7);
        // Per component: normal, so the fourth central moment is 3σ⁴.
        assert_mean_close("calm", &calm, 0.0, 0.25);
        assert_variance_close("calm", &calm, 0.25, 3.0 * 0.0625);
        assert_mean_close("gust", &gust, 8.0, 1.0);
        assert_variance_close("gust", &gust, 1.0, 3.0);
        // The next pole angle does not depend on the force in an explicit-Euler step.
    }

    #[test]
    fn gusts_pass_a_kolmogorov_smirnov_test_against_the_mixture_cdf() {
        // α = 0.01, fixed seed.
        let alpha = 0.01;
        let gusts = gusts(22);
        let cdf = |g: f64| 0.7 * normal_cdf(g / 0.5) + 0.3 * normal_cdf(g - 8.0);
        let statistic = ks_statistic_one_sample(&gusts, cdf);
        let critical = ks_critical_one_sample(alpha, N);
        assert!(statistic < critical, "D = {statistic} >= {critical}");
        // Power: a mixture with the weights swapped is rejected.
        let swapped = |g: f64| 0.3 * normal_cdf(g / 0.5) + 0.7 * normal_cdf(g - 8.0);
        assert!(ks_statistic_one_sample(&gusts, swapped) > critical);
    }

    #[test]
    fn step_adds_the_gust_to_gymnasium_dynamics() {
        // With a zero gust the step is CartPole-v1's, bit for bit.
        let mut calm = GustyCartPole::with_params(GustyCartPoleParams {
            calm_weight: 1.0,
            means: [0.0, 8.0],
            stds: [0.0, 1.0],
            ..GustyCartPoleParams::default()
        })
        .expect("valid");
        let mut plain = CartPole::new();
        assert_eq!(calm.reset(Some(5)), plain.reset(Some(5)));
        loop {
            let action = Action::Discrete(usize::from(calm.state()[2] > 0.0));
            let a = calm.step(&action).expect("valid");
            let b = plain.step(&action).expect("valid");
            assert_eq!(a, b);
            if a.terminated || a.truncated {
                break;
            }
        }
        // Seeded episodes repeat, and differ between seeds.
        let run = |seed| {
            let mut env = GustyCartPole::new();
            let mut trace = vec![env.reset(Some(seed))];
            for _ in 0..10 {
                trace.push(env.step(&Action::Discrete(0)).expect("valid").obs);
            }
            trace
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn modes_are_the_steps_at_the_component_means() {
        let env = GustyCartPole::new();
        let obs = [0.0f32, 0.0, 0.0, 0.0];
        let modes = env.modes(&obs, &Action::Discrete(0)).expect("valid");
        assert_eq!(modes.len(), 2);
        assert_eq!(modes[0].weight, 0.7);
        assert!((modes[1].weight - 0.3).abs() < 1e-15);
        // From rest, upright: temp = F/1.1, thetaacc = -temp/(0.5·(4/3 - 0.1/1.1)),
        // xacc = temp - 0.05·thetaacc/1.1; x_dot' = 0.02·xacc. For F = -10:
        // temp = -9.0909, thetaacc = 14.6341, xacc = -9.7561, x_dot' = -0.195122.
        assert!(
            (f64::from(modes[0].center[1]) + 0.195_122).abs() < 1e-5,
            "{modes:?}"
        );
        // For F = -2: one fifth of that.
        assert!(
            (f64::from(modes[1].center[1]) + 0.039_024_4).abs() < 1e-5,
            "{modes:?}"
        );
    }

    #[test]
    fn invalid_parameters_are_errors() {
        let error = GustyCartPole::with_params(GustyCartPoleParams {
            stds: [0.5, -1.0],
            ..GustyCartPoleParams::default()
        })
        .expect_err("negative std");
        assert_eq!(
            error.to_string(),
            "GustyCartPole-v0: parameter `stds[1]` must be a finite number >= 0, got -1"
        );
        assert!(
            GustyCartPole::with_params(GustyCartPoleParams {
                calm_weight: -0.1,
                ..GustyCartPoleParams::default()
            })
            .is_err()
        );
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(
            GustyCartPole::new()
                .sample_next(&[0.0; 4], &Action::Discrete(2), &mut rng)
                .is_err()
        );
    }
}
