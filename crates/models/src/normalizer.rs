//! Per-dimension standardisation of observations, state changes and rewards.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Means and standard deviations fitted on training transitions, kept by every model as plain
/// serde data (not parameters: they are not in the burn record, so a checkpoint must store the
/// normaliser next to the record and pass it to `init` again before `load_record`).
///
/// - observations: `s_n = (s - obs_mean) / obs_std`
/// - state changes: `d_n = (s' - s - delta_mean) / delta_std`
/// - rewards: `r_n = (r - reward_mean) / reward_std`
///
/// Every standard deviation is at least [`Normalizer::STD_FLOOR`], so constant dimensions (a
/// reward that is always 1) give finite normalised values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    /// Mean of each observation dimension, `[O]`.
    pub obs_mean: Vec<f32>,
    /// Standard deviation of each observation dimension, `[O]`.
    pub obs_std: Vec<f32>,
    /// Mean of each dimension of `s' - s`, `[O]`.
    pub delta_mean: Vec<f32>,
    /// Standard deviation of each dimension of `s' - s`, `[O]`.
    pub delta_std: Vec<f32>,
    /// Mean reward.
    pub reward_mean: f32,
    /// Standard deviation of the reward.
    pub reward_std: f32,
}

fn mean_std(values: impl Iterator<Item = f64> + Clone, floor: f32) -> (f32, f32) {
    let (mut n, mut sum) = (0usize, 0.0f64);
    for v in values.clone() {
        n += 1;
        sum += v;
    }
    let mean = sum / n as f64;
    let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    (mean as f32, (var.sqrt() as f32).max(floor))
}

impl Normalizer {
    /// Lower bound on every fitted standard deviation.
    pub const STD_FLOOR: f32 = 1e-3;

    /// Fits the statistics on `N` transitions (population standard deviation, floored at
    /// [`Self::STD_FLOOR`]).
    ///
    /// # Shapes
    /// - `obs`, `next_obs`: `[N * O]`, row-major
    /// - `rewards`: `[N]`
    ///
    /// # Panics
    /// If `N == 0`, `obs_dim == 0` or the lengths disagree.
    pub fn fit(obs: &[f32], next_obs: &[f32], rewards: &[f32], obs_dim: usize) -> Self {
        assert!(obs_dim > 0, "Normalizer::fit: obs_dim must be positive");
        let n = rewards.len();
        assert!(n > 0, "Normalizer::fit: no transitions");
        assert_eq!(
            obs.len(),
            n * obs_dim,
            "Normalizer::fit: obs length {} != N {n} * O {obs_dim}",
            obs.len()
        );
        assert_eq!(
            next_obs.len(),
            n * obs_dim,
            "Normalizer::fit: next_obs length {} != N {n} * O {obs_dim}",
            next_obs.len()
        );
        let mut normalizer = Self::identity(obs_dim);
        for j in 0..obs_dim {
            let column = (0..n).map(move |i| obs[i * obs_dim + j] as f64);
            (normalizer.obs_mean[j], normalizer.obs_std[j]) = mean_std(column, Self::STD_FLOOR);
            let delta =
                (0..n).map(move |i| next_obs[i * obs_dim + j] as f64 - obs[i * obs_dim + j] as f64);
            (normalizer.delta_mean[j], normalizer.delta_std[j]) = mean_std(delta, Self::STD_FLOOR);
        }
        (normalizer.reward_mean, normalizer.reward_std) =
            mean_std(rewards.iter().map(|&r| r as f64), Self::STD_FLOOR);
        normalizer
    }

    /// The normaliser that changes nothing (means 0, standard deviations 1).
    pub fn identity(obs_dim: usize) -> Self {
        Self {
            obs_mean: vec![0.0; obs_dim],
            obs_std: vec![1.0; obs_dim],
            delta_mean: vec![0.0; obs_dim],
            delta_std: vec![1.0; obs_dim],
            reward_mean: 0.0,
            reward_std: 1.0,
        }
    }

    /// Observation width `O`.
    pub fn obs_dim(&self) -> usize {
        self.obs_mean.len()
    }

    /// Checks that every vector has length `obs_dim` and every standard deviation is positive.
    pub fn validate(&self, obs_dim: usize) -> Result<(), String> {
        for (name, v) in [
            ("obs_mean", &self.obs_mean),
            ("obs_std", &self.obs_std),
            ("delta_mean", &self.delta_mean),
            ("delta_std", &self.delta_std),
        ] {
            if v.len() != obs_dim {
                return Err(format!(
                    "normalizer {name} has length {}, expected obs_dim {obs_dim}",
                    v.len()
                ));
            }
        }
        let stds = self
            .obs_std
            .iter()
            .chain(&self.delta_std)
            .chain([&self.reward_std]);
        if stds.clone().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "normalizer standard deviations must be positive and finite: {self:?}"
            ));
        }
        Ok(())
    }

    /// `sum_j ln delta_std[j]`: the log-Jacobian between normalised and raw next observations
    /// (raw log-density = normalised log-density - this).
    pub fn log_delta_std_sum(&self) -> f64 {
        self.delta_std.iter().map(|s| (*s as f64).ln()).sum()
    }

    /// Normalises observations on the host. `obs`: `[N * O]` -> `[N * O]`.
    pub fn normalize_obs(&self, obs: &[f32]) -> Vec<f32> {
        let o = self.obs_dim();
        obs.iter()
            .enumerate()
            .map(|(i, x)| (x - self.obs_mean[i % o]) / self.obs_std[i % o])
            .collect()
    }

    /// Inverse of [`Self::normalize_obs`].
    pub fn denormalize_obs(&self, obs_n: &[f32]) -> Vec<f32> {
        let o = self.obs_dim();
        obs_n
            .iter()
            .enumerate()
            .map(|(i, x)| x * self.obs_std[i % o] + self.obs_mean[i % o])
            .collect()
    }

    fn row(values: &[f32], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values.to_vec(), [1, values.len()]), device)
    }

    /// `(s - obs_mean) / obs_std`.
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`; returns `[B, O]`
    pub fn normalize_obs_tensor(&self, obs: Tensor<2>) -> Tensor<2> {
        let device = obs.device();
        let inv: Vec<f32> = self.obs_std.iter().map(|s| 1.0 / s).collect();
        (obs - Self::row(&self.obs_mean, &device)) * Self::row(&inv, &device)
    }

    /// `(s' - s - delta_mean) / delta_std`.
    ///
    /// # Shapes
    /// - `obs`, `next_obs`: `[B, O]`; returns `[B, O]`
    pub fn normalize_delta_tensor(&self, obs: Tensor<2>, next_obs: Tensor<2>) -> Tensor<2> {
        let device = obs.device();
        let inv: Vec<f32> = self.delta_std.iter().map(|s| 1.0 / s).collect();
        (next_obs - obs - Self::row(&self.delta_mean, &device)) * Self::row(&inv, &device)
    }

    /// `s + delta_mean + delta_std * d_n`: the raw next observation from a normalised change.
    ///
    /// # Shapes
    /// - `obs`, `delta_n`: `[B, O]`; returns `[B, O]`
    pub fn next_obs_from_delta_tensor(&self, obs: Tensor<2>, delta_n: Tensor<2>) -> Tensor<2> {
        let device = obs.device();
        obs + Self::row(&self.delta_mean, &device) + delta_n * Self::row(&self.delta_std, &device)
    }

    /// `(r - reward_mean) / reward_std`.
    ///
    /// # Shapes
    /// - `reward`: `[B]`; returns `[B]`
    pub fn normalize_reward_tensor(&self, reward: Tensor<1>) -> Tensor<1> {
        reward
            .sub_scalar(self.reward_mean)
            .div_scalar(self.reward_std)
    }

    /// `reward_mean + reward_std * r_n`.
    ///
    /// # Shapes
    /// - `reward_n`: `[B]`; returns `[B]`
    pub fn denormalize_reward_tensor(&self, reward_n: Tensor<1>) -> Tensor<1> {
        reward_n
            .mul_scalar(self.reward_std)
            .add_scalar(self.reward_mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        // N = 4, O = 2; the second observation dimension is constant.
        let obs = vec![1.0, 5.0, 2.0, 5.0, 3.0, 5.0, 4.0, 5.0];
        let next = vec![1.5, 5.0, 2.0, 5.0, 3.5, 5.0, 4.0, 5.0];
        let rewards = vec![1.0, 1.0, 1.0, 1.0];
        (obs, next, rewards)
    }

    #[test]
    fn fit_gives_population_statistics_with_a_std_floor() {
        let (obs, next, rewards) = data();
        let n = Normalizer::fit(&obs, &next, &rewards, 2);
        assert_eq!(n.obs_mean, vec![2.5, 5.0]);
        assert!(
            (n.obs_std[0] - 1.25f32.sqrt()).abs() < 1e-6,
            "{:?}",
            n.obs_std
        );
        assert_eq!(n.obs_std[1], Normalizer::STD_FLOOR);
        assert_eq!(n.delta_mean, vec![0.25, 0.0]);
        assert!((n.delta_std[0] - 0.25).abs() < 1e-6, "{:?}", n.delta_std);
        assert_eq!((n.reward_mean, n.reward_std), (1.0, Normalizer::STD_FLOOR));
        n.validate(2).unwrap();
        assert!(n.validate(3).is_err());
    }

    #[test]
    fn normaliser_round_trips_observations_deltas_and_rewards() {
        let (obs, next, rewards) = data();
        let n = Normalizer::fit(&obs, &next, &rewards, 2);
        let back = n.denormalize_obs(&n.normalize_obs(&obs));
        for (a, b) in obs.iter().zip(&back) {
            assert!((a - b).abs() < 1e-5, "{obs:?} -> {back:?}");
        }

        let device = wm_backend::test_device();
        let s = Tensor::<2>::from_data(TensorData::new(obs.clone(), [4, 2]), &device);
        let s2 = Tensor::<2>::from_data(TensorData::new(next.clone(), [4, 2]), &device);
        let d = n.normalize_delta_tensor(s.clone(), s2);
        let rebuilt = n
            .next_obs_from_delta_tensor(s.clone(), d)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (a, b) in next.iter().zip(&rebuilt) {
            assert!((a - b).abs() < 1e-5, "{next:?} -> {rebuilt:?}");
        }
        let s_n = n
            .normalize_obs_tensor(s)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(s_n, n.normalize_obs(&obs));

        let r = Tensor::<1>::from_floats([0.5, 1.0, 2.0], &device);
        let r_back = n
            .denormalize_reward_tensor(n.normalize_reward_tensor(r))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (a, b) in [0.5f32, 1.0, 2.0].iter().zip(&r_back) {
            assert!((a - b).abs() < 1e-4, "{r_back:?}");
        }
        // Serde round trip.
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<Normalizer>(&json).unwrap(), n);
    }
}
