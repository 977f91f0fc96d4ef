//! `WetChicken-v0`: the two-dimensional continuous Wet-Chicken benchmark, bimodal (a waterfall
//! sends the canoe back to the start) and heteroscedastic (the turbulence depends on the
//! position across the river).

use rand::{Rng, RngCore};

use crate::episode::{EpisodeClock, ResetRng};
use crate::error::EnvError;
use crate::space::{Action, Space};
use crate::stochastic::{Mode, NoiseRng, StochasticTransition, check_parameter, check_width};
use crate::{Env, Step};

/// Gymnasium-style id of [`WetChicken`].
pub const WET_CHICKEN_ID: &str = "WetChicken-v0";
/// Steps after which an episode of [`WetChicken`] is truncated.
pub const WET_CHICKEN_MAX_EPISODE_STEPS: usize = 100;

/// Parameters of [`WetChicken`]. [`Default`]: the benchmark's `l = w = 5`, drift up to 3,
/// turbulence `3.5 - drift`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WetChickenParams {
    /// `l`, the river's length; the waterfall is at `x = l` (`> 0`).
    pub length: f64,
    /// `w`, the river's width (`> 0`).
    pub width: f64,
    /// The drift at the far bank `y = w` (`>= 0`); it grows linearly from 0 at `y = 0`.
    pub max_drift: f64,
    /// The turbulence at `y = 0`; it falls by the drift: `s = max_turbulence - v`
    /// (`>= max_drift`, so that it never goes negative).
    pub max_turbulence: f64,
}

impl Default for WetChickenParams {
    fn default() -> Self {
        Self {
            length: 5.0,
            width: 5.0,
            max_drift: 3.0,
            max_turbulence: 3.5,
        }
    }
}

impl WetChickenParams {
    /// Checks positive sizes, a drift `>= 0` and a turbulence `>= max_drift`.
    ///
    /// # Errors
    /// [`EnvError::InvalidParameter`] naming the first bad field.
    pub fn validate(&self) -> Result<(), EnvError> {
        check_parameter(
            WET_CHICKEN_ID,
            "length",
            self.length,
            self.length > 0.0,
            "a positive number",
        )?;
        check_parameter(
            WET_CHICKEN_ID,
            "width",
            self.width,
            self.width > 0.0,
            "a positive number",
        )?;
        check_parameter(
            WET_CHICKEN_ID,
            "max_drift",
            self.max_drift,
            self.max_drift >= 0.0,
            "a finite number >= 0",
        )?;
        check_parameter(
            WET_CHICKEN_ID,
            "max_turbulence",
            self.max_turbulence,
            self.max_turbulence >= self.max_drift,
            &format!("a finite number >= max_drift ({})", self.max_drift),
        )
    }

    /// Drift `v = max_drift·y/w` and turbulence `s = max_turbulence - v` at `y`.
    pub fn drift_and_turbulence(&self, y: f64) -> (f64, f64) {
        let drift = self.max_drift * y / self.width;
        (drift, self.max_turbulence - drift)
    }
}

/// A canoe on a river of length `l` and width `w`, paddling towards a waterfall at `x = l`
/// without going over it (Tresp 1994; the two-dimensional continuous version of Hans & Udluft
/// 2009, with the equations of Depeweg, Hernández-Lobato, Doshi-Velez & Udluft 2017, "Learning
/// and policy search in stochastic dynamical systems with Bayesian neural networks", ICLR,
/// section 5, Wet-Chicken). State and observation `[x, y]`, action `[a_x, a_y]` in `[-1, 1]²`
/// (clipped). With drift `v = 3y/w` and turbulence `s = 3.5 - v` (the far bank drifts most and
/// is the calmest) and `τ ~ U(-1, 1)`:
///
/// ```text
/// x̂ = x + a_x + v + s·τ
/// (x', y') = (0, 0)                     if x̂ > l  (over the waterfall: back to the start)
///          = (0, clip(y + a_y, 0, w))  if x̂ < 0
///          = (x̂, clip(y + a_y, 0, w))  otherwise
/// ```
///
/// Reward `-(l - x)` for the state the action is taken in. The paper's text says the canoe
/// "has to start back again at the origin (0, 0)" after a fall: here both coordinates are reset
/// (its displayed equation for `y` omits the fall). The next state is therefore bimodal near
/// the waterfall (the river's uniform part against the origin) and heteroscedastic in `y`
/// (`Var[x̂] = s²/3`). It has atoms (`x' = 0`) and a deterministic `y'`, so
/// [`StochasticTransition::log_density`] is `None`. Never terminates; truncated at step 100.
/// The first state is uniform on the river `[0, l) × [0, w)` (so that collected data cover it).
#[derive(Clone, Debug)]
pub struct WetChicken {
    params: WetChickenParams,
    state: [f64; 2],
    clock: EpisodeClock,
    reset_rng: ResetRng,
    noise_rng: NoiseRng,
}

impl Default for WetChicken {
    fn default() -> Self {
        Self::new()
    }
}

/// Where `x̂` lands.
enum Landing {
    /// Over the waterfall.
    Fall,
    /// Past the near bank, clipped to `x' = 0`.
    Bank,
    /// On the river at `x̂`.
    River(f64),
}

impl WetChicken {
    /// The benchmark with its default parameters. Call [`Env::reset`] before stepping.
    pub fn new() -> Self {
        Self::with_params(WetChickenParams::default()).expect("the defaults are valid")
    }

    /// A river with custom parameters.
    ///
    /// # Errors
    /// [`EnvError::InvalidParameter`] if a parameter is out of range.
    pub fn with_params(params: WetChickenParams) -> Result<Self, EnvError> {
        params.validate()?;
        Ok(Self {
            params,
            state: [0.0; 2],
            clock: EpisodeClock::new(WET_CHICKEN_MAX_EPISODE_STEPS),
            reset_rng: ResetRng::default(),
            noise_rng: NoiseRng::default(),
        })
    }

    /// The parameters this river flows with.
    pub fn params(&self) -> &WetChickenParams {
        &self.params
    }

    /// The internal `f64` state `[x, y]`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Sets the state and starts a new episode from it; returns its observation.
    pub fn set_state(&mut self, state: [f64; 2]) -> Vec<f32> {
        self.state = state;
        self.clock.restart();
        state.map(|v| v as f32).to_vec()
    }

    /// The clipped paddling `[a_x, a_y]`; NaN and wrong shapes are rejected.
    fn paddle(&self, action: &Action) -> Result<[f64; 2], EnvError> {
        match action {
            Action::Continuous(values)
                if values.len() == 2 && !values.iter().any(|v| v.is_nan()) =>
            {
                Ok([0, 1].map(|i| f64::from(values[i].clamp(-1.0, 1.0))))
            }
            _ => Err(EnvError::InvalidAction {
                env_id: WET_CHICKEN_ID.to_string(),
                action: action.clone(),
                space: self.action_space(),
            }),
        }
    }

    /// The centre `x + a_x + v` and half-width `s` of `x̂`'s uniform law.
    fn center_and_turbulence(&self, [x, y]: [f64; 2], [a_x, _]: [f64; 2]) -> (f64, f64) {
        let (drift, turbulence) = self.params.drift_and_turbulence(y);
        (x + a_x + drift, turbulence)
    }

    fn land(&self, x_hat: f64) -> Landing {
        if x_hat > self.params.length {
            Landing::Fall
        } else if x_hat < 0.0 {
            Landing::Bank
        } else {
            Landing::River(x_hat)
        }
    }

    /// The next state from `x̂`.
    fn next_state(&self, [_, y]: [f64; 2], [_, a_y]: [f64; 2], landing: Landing) -> [f64; 2] {
        let across = (y + a_y).clamp(0.0, self.params.width);
        match landing {
            Landing::Fall => [0.0, 0.0],
            Landing::Bank => [0.0, across],
            Landing::River(x) => [x, across],
        }
    }

    fn transition(&self, state: [f64; 2], paddle: [f64; 2], rng: &mut dyn RngCore) -> [f64; 2] {
        let (center, turbulence) = self.center_and_turbulence(state, paddle);
        let tau: f64 = rng.random_range(-1.0..1.0);
        self.next_state(state, paddle, self.land(center + turbulence * tau))
    }
}

impl Env for WetChicken {
    fn id(&self) -> &str {
        WET_CHICKEN_ID
    }

    /// The river `Box(low=[0, 0], high=[l, w])`.
    fn observation_space(&self) -> Space {
        Space::Box {
            low: vec![0.0, 0.0],
            high: vec![self.params.length as f32, self.params.width as f32],
        }
    }

    /// `Box(low=[-1, -1], high=[1, 1])`; actions outside it are clipped by `step`.
    fn action_space(&self) -> Space {
        Space::Box {
            low: vec![-1.0, -1.0],
            high: vec![1.0, 1.0],
        }
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.clock.max_episode_steps())
    }

    /// `x` uniform in `[0, l)`, `y` in `[0, w)`; `Some(seed)` also reseeds the turbulence.
    fn reset(&mut self, seed: Option<u64>) -> Vec<f32> {
        let generator = self.reset_rng.generator(seed);
        let x = generator.uniform(0.0, self.params.length);
        let y = generator.uniform(0.0, self.params.width);
        self.noise_rng.reseed(seed);
        self.set_state([x, y])
    }

    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let paddle = self.paddle(action)?;
        self.clock.check_can_step(WET_CHICKEN_ID)?;
        let reward = -(self.params.length - self.state[0]);
        let mut rng = std::mem::take(&mut self.noise_rng);
        self.state = self.transition(self.state, paddle, rng.generator());
        self.noise_rng = rng;
        let truncated = self.clock.record_step(false);
        Ok(Step {
            obs: self.state.map(|v| v as f32).to_vec(),
            reward,
            terminated: false,
            truncated,
        })
    }
}

impl StochasticTransition for WetChicken {
    fn sample_next(
        &self,
        obs: &[f32],
        action: &Action,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>, EnvError> {
        check_width(WET_CHICKEN_ID, obs, 2)?;
        let paddle = self.paddle(action)?;
        let state = [f64::from(obs[0]), f64::from(obs[1])];
        Ok(self
            .transition(state, paddle, rng)
            .map(|v| v as f32)
            .to_vec())
    }

    /// Always `None`: `x' = 0` has positive probability and `y'` is determined by `(s, a)`.
    fn log_density(
        &self,
        obs: &[f32],
        action: &Action,
        next_obs: &[f32],
    ) -> Result<Option<f64>, EnvError> {
        check_width(WET_CHICKEN_ID, obs, 2)?;
        check_width(WET_CHICKEN_ID, next_obs, 2)?;
        self.paddle(action)?;
        Ok(None)
    }

    /// Up to three modes: the river (the uniform part of `x̂` inside `[0, l]`, centred at its
    /// mean, weighted by its probability), the near-bank atom `(0, y')` (probability of
    /// `x̂ < 0`) and the origin after a fall (probability of `x̂ > l`). Zero-weight modes are
    /// left out; the bank atom and the origin merge when `y' = 0`. With no turbulence the
    /// river mode is the atom `x̂`.
    fn modes(&self, obs: &[f32], action: &Action) -> Result<Vec<Mode>, EnvError> {
        check_width(WET_CHICKEN_ID, obs, 2)?;
        let paddle = self.paddle(action)?;
        let state = [f64::from(obs[0]), f64::from(obs[1])];
        let (center, turbulence) = self.center_and_turbulence(state, paddle);
        let length = self.params.length;
        let candidates: Vec<(Landing, f64)> = if turbulence == 0.0 {
            vec![(self.land(center), 1.0)]
        } else {
            let (low, high) = (center - turbulence, center + turbulence);
            let spread = high - low;
            let mass = |a: f64, b: f64| ((b.min(high) - a.max(low)).max(0.0)) / spread;
            let (river_low, river_high) = (low.max(0.0), high.min(length));
            vec![
                (
                    Landing::River(0.5 * (river_low + river_high)),
                    mass(0.0, length),
                ),
                (Landing::Bank, mass(f64::NEG_INFINITY, 0.0)),
                (Landing::Fall, mass(length, f64::INFINITY)),
            ]
        };
        let mut modes: Vec<Mode> = Vec::with_capacity(3);
        for (landing, weight) in candidates {
            if weight <= 0.0 {
                continue;
            }
            let center = self
                .next_state(state, paddle, landing)
                .map(|v| v as f32)
                .to_vec();
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
    use crate::stochastic::test_support::{
        assert_fraction_close, assert_mean_close, assert_variance_close,
    };
    use crate::stochastic::{
        ks_critical_one_sample, ks_critical_two_sample, ks_statistic_one_sample,
        ks_statistic_two_sample,
    };

    const N: usize = 20_000;

    fn paddle(a_x: f32, a_y: f32) -> Action {
        Action::Continuous(vec![a_x, a_y])
    }

    fn samples(obs: [f32; 2], action: &Action, seed: u64) -> Vec<Vec<f32>> {
        let env = WetChicken::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..N)
            .map(|_| env.sample_next(&obs, action, &mut rng).expect("valid"))
            .collect()
    }

    /// Uniform on an interval of width `L`: variance `L²/12`, fourth central moment `L⁴/80`.
    fn uniform_moments(width: f64) -> (f64, f64) {
        (width * width / 12.0, width.powi(4) / 80.0)
    }

    #[test]
    fn near_the_waterfall_the_next_state_is_the_river_or_the_origin() {
        // x = 4, y = 1, a = (0.5, 0): v = 0.6, s = 2.9, x̂ ~ U(2.2, 8.0): a fall has
        // probability (8 - 5)/5.8 = 0.517241, else x' ~ U(2.2, 5) and y' = 1.
        let next = samples([4.0, 1.0], &paddle(0.5, 0.0), 31);
        let (fallen, river): (Vec<&Vec<f32>>, Vec<&Vec<f32>>) =
            next.iter().partition(|s| s[0] == 0.0);
        assert!(fallen.iter().all(|s| s[1] == 0.0), "a fall resets y too");
        assert!(
            river
                .iter()
                .all(|s| s[1] == 1.0 && (2.2..=5.0).contains(&s[0]))
        );
        assert_fraction_close("fall", fallen.len(), N, 3.0 / 5.8);
        let x: Vec<f64> = river.iter().map(|s| f64::from(s[0])).collect();
        let (variance, fourth) = uniform_moments(2.8);
        assert_mean_close("river", &x, 3.6, variance);
        assert_variance_close("river", &x, variance, fourth);
        // α = 0.01, fixed seed: the river part against U(2.2, 5).
        let statistic = ks_statistic_one_sample(&x, |v| ((v - 2.2) / 2.8).clamp(0.0, 1.0));
        assert!(
            statistic < ks_critical_one_sample(0.01, x.len()),
            "D = {statistic}"
        );
    }

    #[test]
    fn turbulence_shrinks_towards_the_far_bank() {
        // Heteroscedastic: away from the banks and the waterfall x' ~ U(c - s, c + s) with
        // s = 3.5 - 3y/5, so Var[x'] = s²/3.
        // y = 2: c = 1.2 + 1.2 = 2.4, s = 2.3; y = 4: c = 0 + 2.4 = 2.4, s = 1.1.
        for (obs, turbulence, seed) in [([1.2f32, 2.0f32], 2.3, 32), ([0.0, 4.0], 1.1, 33)] {
            let next = samples(obs, &paddle(0.0, 0.5), seed);
            assert!(next.iter().all(|s| s[1] == obs[1] + 0.5));
            let x: Vec<f64> = next.iter().map(|s| f64::from(s[0])).collect();
            let (variance, fourth) = uniform_moments(2.0 * turbulence);
            assert_mean_close("x'", &x, 2.4, variance);
            assert_variance_close("x'", &x, variance, fourth);
            // α = 0.01, fixed seed.
            let low = 2.4 - turbulence;
            let statistic =
                ks_statistic_one_sample(&x, |v| ((v - low) / (2.0 * turbulence)).clamp(0.0, 1.0));
            assert!(
                statistic < ks_critical_one_sample(0.01, N),
                "D = {statistic}"
            );
        }
    }

    #[test]
    fn modes_weigh_the_river_the_bank_and_the_fall() {
        let env = WetChicken::new();
        let modes = env.modes(&[4.0, 1.0], &paddle(0.5, 0.0)).expect("valid");
        assert_eq!(modes.len(), 2);
        assert_eq!(modes[0].center, vec![3.6, 1.0]);
        assert!((modes[0].weight - 2.8 / 5.8).abs() < 1e-12);
        assert_eq!(modes[1].center, vec![0.0, 0.0]);
        assert!((modes[1].weight - 3.0 / 5.8).abs() < 1e-12);
        // x = 0, y = 0, a = (-1, 0.5): v = 0, s = 3.5, x̂ ~ U(-4.5, 2.5): the bank atom (0, 0.5)
        // has 4.5/7, the river U(0, 2.5) 2.5/7, no fall.
        let modes = env.modes(&[0.0, 0.0], &paddle(-1.0, 0.5)).expect("valid");
        assert_eq!(
            modes.iter().map(|m| m.center.clone()).collect::<Vec<_>>(),
            [vec![1.25, 0.5], vec![0.0, 0.5]]
        );
        assert!((modes[1].weight - 4.5 / 7.0).abs() < 1e-12);
        let total: f64 = modes.iter().map(|m| m.weight).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn step_follows_the_same_law_as_sample_next() {
        // Two-sample KS at α = 0.01 on x' (with its atom at 0, so conservative).
        let alpha = 0.01;
        let n = 4000;
        let mut env = WetChicken::new();
        let stepped: Vec<f64> = (0..n as u64)
            .map(|seed| {
                env.reset(Some(seed));
                env.set_state([3.0, 2.5]);
                let step = env.step(&paddle(0.2, -0.3)).expect("valid");
                assert_eq!(step.reward, -2.0, "-(l - x) of the state acted in");
                f64::from(step.obs[0])
            })
            .collect();
        let sampled: Vec<f64> = samples([3.0, 2.5], &paddle(0.2, -0.3), 34)[..n]
            .iter()
            .map(|s| f64::from(s[0]))
            .collect();
        let statistic = ks_statistic_two_sample(&stepped, &sampled);
        assert!(
            statistic < ks_critical_two_sample(alpha, n, n),
            "D = {statistic}"
        );
    }

    #[test]
    fn same_seed_gives_the_same_episode_and_bad_parameters_are_errors() {
        let run = |seed| {
            let mut env = WetChicken::new();
            let mut trace = vec![env.reset(Some(seed))];
            for _ in 0..10 {
                trace.push(env.step(&paddle(1.0, 0.0)).expect("valid").obs);
            }
            trace
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        let error = WetChicken::with_params(WetChickenParams {
            max_turbulence: 2.0,
            ..WetChickenParams::default()
        })
        .expect_err("turbulence below the drift");
        assert_eq!(
            error.to_string(),
            "WetChicken-v0: parameter `max_turbulence` must be a finite number >= max_drift (3), got 2"
        );
        assert!(
            WetChicken::new()
                .step(&paddle(0.0, 0.0))
                .is_err_and(|e| matches!(e, EnvError::NotReset { .. }))
        );
    }
}
