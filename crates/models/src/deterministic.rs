//! The expectation baseline: a point prediction of the state change trained with squared error.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::dist::{bce_with_logits, gaussian_log_prob_sum};
use crate::heads::{self, Head};
use crate::mlp::{Mlp, MlpConfig};
use crate::validate::{self, InvalidField};
use crate::{LossOutput, ModelSpec, Normalizer, Prediction, TransitionModel, TransitionTensors};

/// Hyper-parameters of [`DeterministicMlp`]; every field has a serde default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeterministicMlpConfig {
    /// Hidden layer widths. Default `[256, 256]`.
    pub hidden: Vec<usize>,
    /// Weight of the `recon` term (squared error of the normalised change). Default `1`.
    pub recon_weight: f64,
    /// Weight of the `reward` term (squared error of the normalised reward). Default `1`.
    pub reward_weight: f64,
    /// Weight of the `termination` term (BCE). Default `1`.
    pub termination_weight: f64,
}

impl Default for DeterministicMlpConfig {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256],
            recon_weight: 1.0,
            reward_weight: 1.0,
            termination_weight: 1.0,
        }
    }
}

impl DeterministicMlpConfig {
    /// The first field out of range: widths in `1..=MAX_WIDTH`, weights finite in `[0, 1e6]`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate::widths("hidden", &self.hidden)?;
        for (field, value) in [
            ("recon_weight", self.recon_weight),
            ("reward_weight", self.reward_weight),
            ("termination_weight", self.termination_weight),
        ] {
            validate::within(field, value, 0.0, 1e6)?;
        }
        Ok(())
    }

    /// Builds the model on `device` (residual standard deviation not yet fitted: unit variance
    /// in normalised units).
    ///
    /// # Panics
    /// If the spec or the normaliser is inconsistent, or the config does not pass
    /// [`DeterministicMlpConfig::validate`].
    pub fn init(
        &self,
        spec: &ModelSpec,
        normalizer: Normalizer,
        device: &Device,
    ) -> DeterministicMlp {
        spec.validate().expect("invalid model spec");
        normalizer
            .validate(spec.obs_dim)
            .expect("normalizer does not fit the spec");
        if let Err(invalid) = self.validate() {
            panic!("deterministic MLP config: {invalid}");
        }
        let input = spec.obs_dim + spec.action.input_width();
        DeterministicMlp {
            net: MlpConfig::new(
                input,
                self.hidden.clone(),
                heads::head_width(spec.obs_dim, false),
            )
            .init(device),
            residual_std: None,
            normalizer,
            spec: spec.clone(),
            config: self.clone(),
        }
    }
}

/// `s' = s + delta_mean + delta_std * f(s, a)`, trained with squared error on the normalised
/// change (`recon` = sum over dimensions, mean over the batch), squared error on the normalised
/// reward, and BCE on termination.
///
/// `sample_next` and `mean_next` both return the point prediction (the model has no noise).
///
/// `log_likelihood` scores `s'` under `N(f(s, a), diag(residual_std)^2)` in normalised units
/// (converted to raw units). The residual standard deviation is plain data, not a parameter:
/// until it is fitted it is 1 (unit variance in normalised units). The trainer should, after
/// training, call [`DeterministicMlp::fit_residual_std`] with training batches (or
/// [`crate::AnyTransitionModel::fit_residual_std`]), store [`DeterministicMlp::residual_std`]
/// in the checkpoint beside the normaliser, and restore it with
/// [`DeterministicMlp::set_residual_std`] after `load_record`.
#[derive(Module, Debug)]
pub struct DeterministicMlp {
    /// `[s_n, a] -> [change (O) | reward | termination logit]`.
    pub net: Mlp,
    #[module(skip)]
    residual_std: Option<Vec<f32>>,
    #[module(skip)]
    normalizer: Normalizer,
    #[module(skip)]
    spec: ModelSpec,
    #[module(skip)]
    config: DeterministicMlpConfig,
}

impl DeterministicMlp {
    /// Smallest residual standard deviation [`Self::fit_residual_std`] will store.
    pub const RESIDUAL_STD_FLOOR: f32 = 1e-4;

    /// The spec the model was built for.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The config the model was built with.
    pub fn config(&self) -> &DeterministicMlpConfig {
        &self.config
    }

    /// The fitted per-dimension residual standard deviation in normalised units, `[O]`, if any.
    pub fn residual_std(&self) -> Option<&[f32]> {
        self.residual_std.as_deref()
    }

    /// Sets the residual standard deviation (normalised units, `[O]`, all positive).
    ///
    /// # Panics
    /// On a wrong length or a non-positive value.
    pub fn set_residual_std(&mut self, std: Vec<f32>) {
        assert_eq!(
            std.len(),
            self.spec.obs_dim,
            "residual std {std:?} must have obs_dim {} values",
            self.spec.obs_dim
        );
        assert!(
            std.iter().all(|s| s.is_finite() && *s > 0.0),
            "residual std must be positive: {std:?}"
        );
        self.residual_std = Some(std);
    }

    /// Per-dimension sums of squared residuals of the normalised change over a batch, and the
    /// batch size: the pieces [`Self::fit_residual_std`] accumulates.
    pub fn residual_sq_sums(&self, batch: &TransitionTensors) -> (Vec<f64>, usize) {
        heads::check_batch(&self.spec, batch);
        let model = self.valid();
        let batch = batch.without_autodiff();
        let (pred, _, _) = model.forward(batch.obs.clone(), batch.action);
        let d_n = self
            .normalizer
            .normalize_delta_tensor(batch.obs, batch.next_obs);
        let sums = (d_n - pred)
            .square()
            .sum_dim(0)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 residuals");
        (
            sums.into_iter().map(f64::from).collect(),
            batch.reward.dims()[0],
        )
    }

    /// Fits the residual standard deviation `sqrt(mean residual^2)` per dimension over all
    /// `batches` (normalised units, floored at [`Self::RESIDUAL_STD_FLOOR`]), stores it and
    /// returns it. Call it after training, on training (or held-out) transitions.
    ///
    /// # Panics
    /// If `batches` is empty.
    pub fn fit_residual_std<'a>(
        &mut self,
        batches: impl IntoIterator<Item = &'a TransitionTensors>,
    ) -> Vec<f32> {
        let mut sums = vec![0.0f64; self.spec.obs_dim];
        let mut n = 0usize;
        for batch in batches {
            let (s, b) = self.residual_sq_sums(batch);
            sums.iter_mut().zip(s).for_each(|(acc, v)| *acc += v);
            n += b;
        }
        assert!(n > 0, "fit_residual_std: no transitions");
        let std: Vec<f32> = sums
            .iter()
            .map(|s| ((s / n as f64).sqrt() as f32).max(Self::RESIDUAL_STD_FLOOR))
            .collect();
        self.set_residual_std(std.clone());
        std
    }

    /// Predicted normalised change, normalised reward and termination logit.
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`, `action`: `[B, raw width]`
    /// - returns `([B, O], [B], [B])`
    pub fn forward(&self, obs: Tensor<2>, action: Tensor<2>) -> (Tensor<2>, Tensor<1>, Tensor<1>) {
        let x = heads::model_input(&self.spec, &self.normalizer, obs, action);
        let Head {
            delta_mean,
            reward_mean,
            term_logit,
            ..
        } = heads::split_head(self.net.forward(x), self.spec.obs_dim, None);
        (delta_mean, reward_mean, term_logit)
    }
}

impl TransitionModel for DeterministicMlp {
    fn loss(&self, batch: &TransitionTensors) -> LossOutput {
        heads::check_batch(&self.spec, batch);
        let (pred, reward_pred, logit) = self.forward(batch.obs.clone(), batch.action.clone());
        let d_n = self
            .normalizer
            .normalize_delta_tensor(batch.obs.clone(), batch.next_obs.clone());
        let [b, _] = d_n.dims();
        let sq = (d_n - pred).square();
        let delta_mse = sq.clone().mean();
        let recon = sq.sum_dim(1).reshape([b]).mean();
        let r_n = self
            .normalizer
            .normalize_reward_tensor(batch.reward.clone());
        let reward = (r_n - reward_pred).square().mean();
        let termination = bce_with_logits(logit, batch.terminated.clone()).mean();
        let c = &self.config;
        heads::assemble_loss(
            vec![
                ("recon", recon),
                ("reward", reward),
                ("termination", termination),
            ],
            vec![
                ("recon", c.recon_weight),
                ("reward", c.reward_weight),
                ("termination", c.termination_weight),
            ],
            vec![("delta_mse", delta_mse)],
        )
    }

    fn sample_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        self.mean_next(obs, action)
    }

    fn mean_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        let (pred, reward, logit) = self.forward(obs.clone(), action);
        heads::prediction(&self.normalizer, obs, pred, reward, logit)
    }

    fn log_likelihood(&self, batch: &TransitionTensors, _n_samples: usize) -> Tensor<1> {
        heads::check_batch(&self.spec, batch);
        let model = self.valid();
        let batch = batch.without_autodiff();
        let (pred, _, _) = model.forward(batch.obs.clone(), batch.action);
        let d_n = self
            .normalizer
            .normalize_delta_tensor(batch.obs, batch.next_obs);
        let o = self.spec.obs_dim;
        let log_std: Vec<f32> = match &self.residual_std {
            Some(s) => s.iter().map(|v| v.ln()).collect(),
            None => vec![0.0; o],
        };
        let log_std = heads::row(log_std, &pred.device()).repeat_dim(0, pred.dims()[0]);
        gaussian_log_prob_sum(d_n, pred, log_std).sub_scalar(self.normalizer.log_delta_std_sum())
    }

    fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{self, LinearGaussianToy};

    /// On the linear-Gaussian toy the fitted residual std approaches the true noise std (in
    /// normalised units) and the resulting log-likelihood approaches the true entropy; before
    /// fitting the log-likelihood uses unit variance and is far worse.
    #[test]
    fn residual_std_fit_recovers_the_noise_level_of_a_linear_gaussian_toy() {
        let toy = LinearGaussianToy::default();
        let (_rng, device) = test_util::seeded_device(3);
        let device = device.autodiff();
        let mut rng = test_util::rng(5);
        let normalizer = toy.normalizer(&mut rng);
        let config = DeterministicMlpConfig {
            hidden: vec![64, 64],
            ..Default::default()
        };
        let model = config.init(&toy.spec(), normalizer.clone(), &device);
        let mut model = test_util::train(
            model,
            800,
            3e-3,
            |rng| toy.batch(rng, 128, &device),
            &mut rng,
        );
        let plain = device.clone().without_autodiff();
        let test = toy.batch(&mut test_util::rng(99), 4096, &plain);
        let before = -test_util::mean(model.log_likelihood(&test, 1)) / 2.0;
        let fit_batches: Vec<_> = (0..4).map(|_| toy.batch(&mut rng, 1024, &plain)).collect();
        let std = model.fit_residual_std(&fit_batches);
        for (i, s) in std.iter().enumerate() {
            let truth = toy.sigma[i] / normalizer.delta_std[i];
            assert!(
                (s / truth - 1.0).abs() < 0.1,
                "dim {i}: fitted {s}, true {truth}"
            );
        }
        let after = -test_util::mean(model.log_likelihood(&test, 1)) / 2.0;
        let entropy = toy.conditional_entropy_per_dim();
        eprintln!(
            "deterministic MLP NLL before fit {before:.4}, after {after:.4}, entropy {entropy:.4} nats/dim"
        );
        assert!(
            (after - entropy).abs() < 0.1 && before > after + 0.2,
            "before {before}, after {after}, entropy {entropy}"
        );
    }
}
