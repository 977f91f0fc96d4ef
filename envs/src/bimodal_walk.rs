//! `BimodalWalk-v0`: a 1-D walk whose every step goes up or down by a fixed offset with equal
//! chance, the smallest transition with two modes, small enough for exact checks.

use rand::{Rng, RngCore};
use rand_distr::{Distribution, StandardNormal};

use crate::episode::{EpisodeClock, ResetRng};
use crate::error::EnvError;
use crate::space::{Action, Space};
use crate::stochastic::{Mode, NoiseRng, StochasticTransition, check_parameter, check_width};
use crate::{Env, Step};

/// Gymnasium-style id of [`BimodalWalk`].
pub const BIMODAL_WALK_ID: &str = "BimodalWalk-v0";
/// Steps after which an episode of [`BimodalWalk`] is truncated.
pub const BIMODAL_WALK_MAX_EPISODE_STEPS: usize = 50;

/// Parameters of [`BimodalWalk`]; [`Default`] gives `offset = 1`, `noise_std = 0.1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BimodalWalkParams {
    /// `δ`, the distance of each mode from `s + a` (`>= 0`).
    pub offset: f64,
    /// `σ`, the standard deviation of the Gaussian noise around each mode (`>= 0`; 0 makes
    /// the two modes atoms, which have no density).
    pub noise_std: f64,
}

impl Default for BimodalWalkParams {
    fn default() -> Self {
        Self {
            offset: 1.0,
            noise_std: 0.1,
        }
    }
}

impl BimodalWalkParams {
    /// Checks that both parameters are finite and `>= 0`.
    ///
    /// # Errors
    /// [`EnvError::InvalidParameter`] naming the first bad field.
    pub fn validate(&self) -> Result<(), EnvError> {
        check_parameter(
            BIMODAL_WALK_ID,
            "offset",
            self.offset,
            self.offset >= 0.0,
            "a finite number >= 0",
        )?;
        check_parameter(
            BIMODAL_WALK_ID,
            "noise_std",
            self.noise_std,
            self.noise_std >= 0.0,
            "a finite number >= 0",
        )
    }
}

/// A point on a line moved by an action `a` in `[-1, 1]` (clipped) and a coin flip:
///
/// `s' = s + a + δ·b + σ·ε`, with `b = ±1` with probability 1/2 each and `ε ~ N(0, 1)`,
///
/// so `p(s' | s, a) = ½ N(s'; s + a + δ, σ²) + ½ N(s'; s + a - δ, σ²)`: mean `s + a`,
/// variance `δ² + σ²`. Reward `-|s'|`, never terminates, truncated at step 50. The first
/// state is uniform in `[-1, 1)`.
#[derive(Clone, Debug)]
pub struct BimodalWalk {
    params: BimodalWalkParams,
    state: f64,
    clock: EpisodeClock,
    reset_rng: ResetRng,
    noise_rng: NoiseRng,
}

impl Default for BimodalWalk {
    fn default() -> Self {
        Self::new()
    }
}

impl BimodalWalk {
    /// A walk with the default parameters. Call [`Env::reset`] before stepping.
    pub fn new() -> Self {
        Self::with_params(BimodalWalkParams::default()).expect("the defaults are valid")
    }

    /// A walk with custom parameters.
    ///
    /// # Errors
    /// [`EnvError::InvalidParameter`] if a parameter is out of range.
    pub fn with_params(params: BimodalWalkParams) -> Result<Self, EnvError> {
        params.validate()?;
        Ok(Self {
            params,
            state: 0.0,
            clock: EpisodeClock::new(BIMODAL_WALK_MAX_EPISODE_STEPS),
            reset_rng: ResetRng::default(),
            noise_rng: NoiseRng::default(),
        })
    }

    /// The parameters this walk steps with.
    pub fn params(&self) -> &BimodalWalkParams {
        &self.params
    }

    /// The internal `f64` position.
    pub fn state(&self) -> f64 {
        self.state
    }

    /// Sets the position and starts a new episode from it; returns its observation.
    pub fn set_state(&mut self, state: f64) -> Vec<f32> {
        self.state = state;
        self.clock.restart();
        vec![state as f32]
    }

    /// The clipped action value; NaN and wrong shapes are rejected.
    fn push(&self, action: &Action) -> Result<f64, EnvError> {
        match action {
            Action::Continuous(values) if values.len() == 1 && !values[0].is_nan() => {
                Ok(f64::from(values[0].clamp(-1.0, 1.0)))
            }
            _ => Err(EnvError::InvalidAction {
                env_id: BIMODAL_WALK_ID.to_string(),
                action: action.clone(),
                space: self.action_space(),
            }),
        }
    }

    fn next_state(&self, state: f64, push: f64, rng: &mut dyn RngCore) -> f64 {
        let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let noise: f64 = StandardNormal.sample(rng);
        state + push + sign * self.params.offset + self.params.noise_std * noise
    }
}

impl Env for BimodalWalk {
    fn id(&self) -> &str {
        BIMODAL_WALK_ID
    }

    /// The unbounded line: `Box(low=[-inf], high=[inf])`.
    fn observation_space(&self) -> Space {
        Space::Box {
            low: vec![f32::NEG_INFINITY],
            high: vec![f32::INFINITY],
        }
    }

    /// `Box(low=[-1], high=[1])`; actions outside it are clipped by `step`, not rejected.
    fn action_space(&self) -> Space {
        Space::Box {
            low: vec![-1.0],
            high: vec![1.0],
        }
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.clock.max_episode_steps())
    }

    /// The position uniform in `[-1, 1)`; `Some(seed)` also reseeds the transition noise.
    fn reset(&mut self, seed: Option<u64>) -> Vec<f32> {
        let state = self.reset_rng.generator(seed).uniform(-1.0, 1.0);
        self.noise_rng.reseed(seed);
        self.set_state(state)
    }

    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let push = self.push(action)?;
        self.clock.check_can_step(BIMODAL_WALK_ID)?;
        let mut rng = std::mem::take(&mut self.noise_rng);
        self.state = self.next_state(self.state, push, rng.generator());
        self.noise_rng = rng;
        let truncated = self.clock.record_step(false);
        Ok(Step {
            obs: vec![self.state as f32],
            reward: -self.state.abs(),
            terminated: false,
            truncated,
        })
    }
}

impl StochasticTransition for BimodalWalk {
    fn sample_next(
        &self,
        obs: &[f32],
        action: &Action,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>, EnvError> {
        check_width(BIMODAL_WALK_ID, obs, 1)?;
        let push = self.push(action)?;
        Ok(vec![self.next_state(f64::from(obs[0]), push, rng) as f32])
    }

    /// `ln(½ N(s'; s+a+δ, σ²) + ½ N(s'; s+a-δ, σ²))`; `None` when `σ = 0`.
    fn log_density(
        &self,
        obs: &[f32],
        action: &Action,
        next_obs: &[f32],
    ) -> Result<Option<f64>, EnvError> {
        check_width(BIMODAL_WALK_ID, obs, 1)?;
        check_width(BIMODAL_WALK_ID, next_obs, 1)?;
        let push = self.push(action)?;
        let sigma = self.params.noise_std;
        if sigma == 0.0 {
            return Ok(None);
        }
        let center = f64::from(obs[0]) + push;
        let next = f64::from(next_obs[0]);
        let log_normal = |mean: f64| {
            let z = (next - mean) / sigma;
            -0.5 * z * z - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
        };
        let (up, down) = (
            log_normal(center + self.params.offset),
            log_normal(center - self.params.offset),
        );
        // log(½e^u + ½e^d), computed stably.
        let top = up.max(down);
        Ok(Some(
            top + (0.5 * (up - top).exp() + 0.5 * (down - top).exp()).ln(),
        ))
    }

    /// `s + a - δ` and `s + a + δ`, weight ½ each (one mode of weight 1 when `δ = 0`).
    fn modes(&self, obs: &[f32], action: &Action) -> Result<Vec<Mode>, EnvError> {
        check_width(BIMODAL_WALK_ID, obs, 1)?;
        let center = f64::from(obs[0]) + self.push(action)?;
        let offset = self.params.offset;
        if offset == 0.0 {
            return Ok(vec![Mode {
                center: vec![center as f32],
                weight: 1.0,
            }]);
        }
        Ok([center - offset, center + offset]
            .map(|c| Mode {
                center: vec![c as f32],
                weight: 0.5,
            })
            .to_vec())
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
    use crate::stochastic::{
        ks_critical_one_sample, ks_critical_two_sample, ks_statistic_one_sample,
        ks_statistic_two_sample, normal_cdf,
    };

    const N: usize = 20_000;

    fn push(a: f32) -> Action {
        Action::Continuous(vec![a])
    }

    fn samples(env: &BimodalWalk, s: f32, a: f32, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..N)
            .map(|_| f64::from(env.sample_next(&[s], &push(a), &mut rng).expect("valid")[0]))
            .collect()
    }

    #[test]
    fn samples_split_into_two_gaussian_modes_of_equal_weight() {
        let env = BimodalWalk::new();
        let next = samples(&env, 0.3, 0.5, 1);
        let center = 0.8;
        // The modes are 20σ apart, so the side of `center` tells the mode (a draw on the wrong
        // side has probability Φ(-10) ≈ 8e-24).
        let (up, down): (Vec<f64>, Vec<f64>) = next.iter().partition(|&&x| x > center);
        assert_fraction_close("upper mode", up.len(), N, 0.5);
        let sigma2: f64 = 0.01;
        // A normal's fourth central moment is 3σ⁴.
        for (name, mode, mean) in [("up", &up, center + 1.0), ("down", &down, center - 1.0)] {
            assert_mean_close(name, mode, mean, sigma2);
            assert_variance_close(name, mode, sigma2, 3.0 * sigma2 * sigma2);
        }
        // The mixture: mean s + a, variance δ² + σ², fourth central moment
        // E[(δb + σε)⁴] = δ⁴ + 6δ²σ² + 3σ⁴.
        assert_mean_close("mixture", &next, center, 1.01);
        assert_variance_close("mixture", &next, 1.01, 1.0 + 0.06 + 3e-4);
    }

    #[test]
    fn samples_pass_a_kolmogorov_smirnov_test_against_the_mixture_cdf() {
        // α = 0.01: with the fixed seed the test is deterministic; a correct sampler fails it
        // for 1% of seeds.
        let alpha = 0.01;
        let env = BimodalWalk::new();
        let next = samples(&env, -0.2, -1.0, 2);
        let cdf = |x: f64| {
            0.5 * normal_cdf((x - (-1.2 + 1.0)) / 0.1) + 0.5 * normal_cdf((x - (-1.2 - 1.0)) / 0.1)
        };
        let statistic = ks_statistic_one_sample(&next, cdf);
        let critical = ks_critical_one_sample(alpha, N);
        assert!(statistic < critical, "D = {statistic} >= {critical}");
        // The test has power: a single Gaussian of the same mean and variance is rejected.
        let wrong = |x: f64| normal_cdf((x + 1.2) / 1.01f64.sqrt());
        assert!(ks_statistic_one_sample(&next, wrong) > critical);
    }

    #[test]
    fn step_follows_the_same_law_as_sample_next() {
        // Two-sample KS at α = 0.01 between one step from s = 0 per seed and the sampler.
        let alpha = 0.01;
        let n = 4000;
        let mut env = BimodalWalk::new();
        let stepped: Vec<f64> = (0..n as u64)
            .map(|seed| {
                env.reset(Some(seed));
                env.set_state(0.0);
                f64::from(env.step(&push(0.25)).expect("valid").obs[0])
            })
            .collect();
        let mut sampled = samples(&env, 0.0, 0.25, 3);
        sampled.truncate(n);
        let statistic = ks_statistic_two_sample(&stepped, &sampled);
        assert!(
            statistic < ks_critical_two_sample(alpha, n, n),
            "D = {statistic}"
        );
    }

    #[test]
    fn log_density_is_the_mixture_density_and_integrates_to_one() {
        let env = BimodalWalk::new();
        // At s' = s + a + δ: ln(½·(1/(σ√(2π))) + ½·(1/(σ√(2π)))·e^{-200}) = ln(1/(0.1·√(2π)))
        // = 1.383646559.
        let at_mode = env
            .log_density(&[0.0], &push(0.5), &[1.5])
            .expect("valid")
            .expect("σ > 0");
        assert!(
            (at_mode - (0.5f64.ln() + 1.383_646_559)).abs() < 1e-8,
            "{at_mode}"
        );
        // Midpoint rule on [-3, 3] with step 1e-3.
        let h = 1e-3;
        let integral: f64 = (0..6000)
            .map(|i| {
                let x = -3.0 + (i as f64 + 0.5) * h;
                env.log_density(&[0.0], &push(0.0), &[x as f32])
                    .expect("valid")
                    .expect("σ > 0")
                    .exp()
                    * h
            })
            .sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
        let atoms = BimodalWalk::with_params(BimodalWalkParams {
            offset: 1.0,
            noise_std: 0.0,
        })
        .expect("valid");
        assert_eq!(atoms.log_density(&[0.0], &push(0.0), &[1.0]), Ok(None));
    }

    #[test]
    fn modes_are_the_two_offsets_around_the_pushed_position() {
        let env = BimodalWalk::new();
        let modes = env.modes(&[2.0], &push(3.0)).expect("valid");
        assert_eq!(
            modes,
            vec![
                Mode {
                    center: vec![2.0],
                    weight: 0.5
                },
                Mode {
                    center: vec![4.0],
                    weight: 0.5
                }
            ],
            "the push is clipped to 1"
        );
    }

    #[test]
    fn same_seed_gives_the_same_episode() {
        let run = |seed| {
            let mut env = BimodalWalk::new();
            let mut trace = vec![env.reset(Some(seed))];
            for _ in 0..10 {
                trace.push(env.step(&push(0.1)).expect("valid").obs);
            }
            trace
        };
        assert_eq!(run(4), run(4));
        assert_ne!(run(4), run(5));
    }

    #[test]
    fn invalid_parameters_and_inputs_are_errors() {
        let error = BimodalWalk::with_params(BimodalWalkParams {
            offset: -1.0,
            noise_std: 0.1,
        })
        .expect_err("negative offset");
        assert_eq!(
            error.to_string(),
            "BimodalWalk-v0: parameter `offset` must be a finite number >= 0, got -1"
        );
        assert!(
            BimodalWalk::with_params(BimodalWalkParams {
                offset: 1.0,
                noise_std: f64::NAN,
            })
            .is_err()
        );
        let env = BimodalWalk::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(matches!(
            env.sample_next(&[0.0, 1.0], &push(0.0), &mut rng),
            Err(EnvError::InvalidObservation {
                expected: 1,
                got: 2,
                ..
            })
        ));
        assert!(
            env.sample_next(&[0.0], &Action::Discrete(0), &mut rng)
                .is_err()
        );
    }
}
