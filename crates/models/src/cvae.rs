//! The conditional VAE world model.
//!
//! ```text
//! posterior  q(z | s, a, s') = N(mu_q, sigma_q)   MLP on [s_n, a, d_n]
//! prior      p(z | s, a)     = N(mu_p, sigma_p)   MLP on [s_n, a]   (or N(0, I))
//! decoder    p(d_n | s, a, z) = N(mu_x, sigma_x)  MLP on [s_n, a, z], also reward and termination
//! ```
//! with `d_n` the normalised change `s' - s`. All log-stds are softly bounded to
//! `[min_log_std, max_log_std]` ([`crate::dist::soft_bound_log_std`]).

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::dist::{
    bce_with_logits, gaussian_log_prob_of_noise, gaussian_log_prob_sum, kl_diag_gaussian,
    kl_standard_normal, logsumexp_dim0, soft_bound_log_std,
};
use crate::heads::{self, Head};
use crate::mlp::{Mlp, MlpConfig};
use crate::validate::{self, InvalidField};
use crate::{LossOutput, ModelSpec, Normalizer, Prediction, TransitionModel, TransitionTensors};

/// The latent prior of the [`Cvae`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PriorKind {
    /// A learned conditional prior `p(z | s, a)` (an MLP giving a diagonal Gaussian).
    #[default]
    Learned,
    /// The fixed standard normal `N(0, I)`.
    Standard,
}

/// Hyper-parameters of the [`Cvae`]; every field has a serde default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CvaeConfig {
    /// Hidden layer widths of the posterior, prior and decoder networks. Default `[256, 256]`.
    pub hidden: Vec<usize>,
    /// Width of the latent `z`. Default `4`.
    pub latent_dim: usize,
    /// Learned conditional prior or `N(0, I)`. Default `Learned`.
    pub prior: PriorKind,
    /// Weight of the `kl` term. Default `1` (the ELBO).
    pub beta: f64,
    /// Free bits, in nats per transition: the `kl` term is `mean_b max(KL_b, free_nats)`, the
    /// KL summed over the latent dimensions of each transition clamped from below, so a
    /// transition whose KL is under the threshold contributes no KL gradient to the posterior
    /// (a learned prior keeps learning, see [`Cvae`]). Default `1` (as DreamerV3): without it
    /// the posterior collapses onto the prior early in training and the model never becomes
    /// multimodal (observed on the bimodal toy: NLL 1.42, the Gaussian baseline's, with
    /// `free_nats = 0`; -0.45 to -0.57 with `1`). `0` gives the plain ELBO.
    pub free_nats: f64,
    /// Lower soft bound of every log-std (decoder, posterior, prior, reward). Default `-5`.
    pub min_log_std: f64,
    /// Upper soft bound of every log-std. Default `2`.
    pub max_log_std: f64,
    /// Weight of the `recon` term (decoder NLL of the normalised change). Default `1`.
    pub recon_weight: f64,
    /// Weight of the `reward` term (reward NLL). Default `1`.
    pub reward_weight: f64,
    /// Weight of the `termination` term (BCE). Default `1`.
    pub termination_weight: f64,
    /// Latent samples processed at once by `log_likelihood` (memory is about
    /// `chunk * B * hidden` floats). Default `64`.
    pub iwae_chunk: usize,
}

impl Default for CvaeConfig {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256],
            latent_dim: 4,
            prior: PriorKind::Learned,
            beta: 1.0,
            free_nats: 1.0,
            min_log_std: -5.0,
            max_log_std: 2.0,
            recon_weight: 1.0,
            reward_weight: 1.0,
            termination_weight: 1.0,
            iwae_chunk: 64,
        }
    }
}

impl CvaeConfig {
    /// The first field out of range: widths and counts in `1..=MAX_WIDTH`, weights and free
    /// nats finite in `[0, 1e6]`, log-std bounds finite in `[-20, 20]` with `min < max`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate::widths("hidden", &self.hidden)?;
        validate::count("latent_dim", self.latent_dim, validate::MAX_WIDTH)?;
        validate::count("iwae_chunk", self.iwae_chunk, validate::MAX_WIDTH)?;
        for (field, value) in [
            ("beta", self.beta),
            ("free_nats", self.free_nats),
            ("recon_weight", self.recon_weight),
            ("reward_weight", self.reward_weight),
            ("termination_weight", self.termination_weight),
        ] {
            validate::within(field, value, 0.0, 1e6)?;
        }
        validate::log_std_bounds("min_log_std", self.min_log_std, self.max_log_std)
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If the spec or the normaliser is inconsistent, or the config does not pass
    /// [`CvaeConfig::validate`] (the trainer validates every config before building).
    pub fn init(&self, spec: &ModelSpec, normalizer: Normalizer, device: &Device) -> Cvae {
        spec.validate().expect("invalid model spec");
        normalizer
            .validate(spec.obs_dim)
            .expect("normalizer does not fit the spec");
        if let Err(invalid) = self.validate() {
            panic!("cVAE config: {invalid}");
        }
        let (o, l) = (spec.obs_dim, self.latent_dim);
        let cond = o + spec.action.input_width();
        let mlp = |input, output| MlpConfig::new(input, self.hidden.clone(), output).init(device);
        Cvae {
            posterior: mlp(cond + o, 2 * l),
            prior: match self.prior {
                PriorKind::Learned => Some(mlp(cond, 2 * l)),
                PriorKind::Standard => None,
            },
            decoder: mlp(cond + l, heads::head_width(o, true)),
            reward_log_std: heads::scalar_param(device),
            normalizer,
            spec: spec.clone(),
            config: self.clone(),
        }
    }
}

/// A conditional VAE over the normalised state change, with reward and termination heads on
/// the decoder.
///
/// - **loss**: `recon + beta * kl + reward + termination` (each with its config weight): `recon`
///   is the decoder NLL of the normalised change with `z ~ q` (one reparameterised sample,
///   summed over dimensions, mean over the batch); `kl` the analytic `KL(q || p)` with free
///   bits (see [`CvaeConfig::free_nats`]); `reward` the Gaussian NLL of the normalised reward
///   given `z`; `termination` the BCE of the termination logit given `z`. Metrics: `kl_raw` (KL
///   before free bits), `decoder_std_mean`, `posterior_std_mean`, `prior_std_mean`,
///   `reward_std`, `delta_mse` (decoder mean vs the normalised change).
/// - **sample_next**: `z ~ p(z | s, a)`, then a sample of the decoder Gaussian.
/// - **mean_next**: the decoder mean at the prior mean `z = mu_p(s, a)` (a central prediction,
///   not the mixture mean: for a multimodal transition it picks the mode the prior mean decodes to).
/// - **log_likelihood(batch, k)**: the importance-weighted bound of Burda et al. (2015),
///   `ln (1/k) sum_i p(d_n | z_i) p(z_i) / q(z_i)`, `z_i ~ q`, a lower bound on
///   `ln p(s' | s, a)` that tightens as `k` grows; computed by chunks of
///   [`CvaeConfig::iwae_chunk`] samples combined with a running log-sum-exp; raw units. For
///   `k = 1` it returns the ELBO with the KL in closed form (same expectation as the one-sample
///   IWAE, lower variance), so `-log_likelihood(batch, 1)` equals `recon + kl_raw` of the loss
///   in raw units for the same `z` sample.
#[derive(Module, Debug)]
pub struct Cvae {
    /// `[s_n, a, d_n] -> [mu_q (L) | raw log-std (L)]`.
    pub posterior: Mlp,
    /// `[s_n, a] -> [mu_p (L) | raw log-std (L)]`; `None` for the standard-normal prior.
    pub prior: Option<Mlp>,
    /// `[s_n, a, z] -> [mu_x (O) | raw log-std (O) | reward | termination logit]`.
    pub decoder: Mlp,
    /// Raw (unbounded) log-std of the normalised reward, `[1]`.
    pub reward_log_std: Param<Tensor<1>>,
    #[module(skip)]
    normalizer: Normalizer,
    #[module(skip)]
    spec: ModelSpec,
    #[module(skip)]
    config: CvaeConfig,
}

/// A diagonal Gaussian over the latent: mean and bounded log-std, each `[B, L]`.
struct Latent {
    mean: Tensor<2>,
    log_std: Tensor<2>,
}

impl Cvae {
    /// The spec the model was built for.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The config the model was built with.
    pub fn config(&self) -> &CvaeConfig {
        &self.config
    }

    fn bound(&self, raw: Tensor<2>) -> Tensor<2> {
        soft_bound_log_std(raw, self.config.min_log_std, self.config.max_log_std)
    }

    fn split_latent(&self, out: Tensor<2>) -> Latent {
        let l = self.config.latent_dim;
        Latent {
            mean: out.clone().narrow(1, 0, l),
            log_std: self.bound(out.narrow(1, l, l)),
        }
    }

    /// `x = [s_n, a]`: `[B, O + A]`.
    fn posterior_of(&self, x: Tensor<2>, d_n: Tensor<2>) -> Latent {
        self.split_latent(self.posterior.forward(Tensor::cat(vec![x, d_n], 1)))
    }

    /// `None` for the standard-normal prior.
    fn prior_of(&self, x: Tensor<2>) -> Option<Latent> {
        self.prior.as_ref().map(|p| self.split_latent(p.forward(x)))
    }

    fn prior_or_standard(&self, x: Tensor<2>) -> Latent {
        let [b, _] = x.dims();
        let device = x.device();
        self.prior_of(x).unwrap_or_else(|| Latent {
            mean: Tensor::zeros([b, self.config.latent_dim], &device),
            log_std: Tensor::zeros([b, self.config.latent_dim], &device),
        })
    }

    fn kl(&self, q: &Latent, p: Option<&Latent>) -> Tensor<1> {
        match p {
            Some(p) => kl_diag_gaussian(
                q.mean.clone(),
                q.log_std.clone(),
                p.mean.clone(),
                p.log_std.clone(),
            ),
            None => kl_standard_normal(q.mean.clone(), q.log_std.clone()),
        }
    }

    /// The `kl` loss term with free bits, and the raw batch-mean KL (detached), both `[1]`.
    ///
    /// The value of the term is `mean_b max(KL_b, free_nats)`. Free bits act on the posterior
    /// only: below the threshold the posterior gets no KL gradient, while a learned prior always
    /// gets the gradient of `KL(sg(q) || p)` so that it keeps tracking the posterior (otherwise a
    /// prior under the threshold would stop learning and sampling from it would drift from what
    /// the decoder was trained on). With `free_nats = 0` this is the plain KL and its gradient.
    fn kl_term(&self, q: &Latent, p: Option<&Latent>) -> (Tensor<1>, Tensor<1>) {
        let free = self.config.free_nats;
        let kl = self.kl(q, p);
        let kl_raw = kl.clone().detach().mean();
        let term = match p {
            Some(p) if free > 0.0 => {
                let sg = |l: &Latent| Latent {
                    mean: l.mean.clone().detach(),
                    log_std: l.log_std.clone().detach(),
                };
                let for_posterior = self.kl(q, Some(&sg(p))).clamp_min(free);
                let for_prior = self.kl(&sg(q), Some(p));
                for_posterior + for_prior.clone() - for_prior.detach()
            }
            _ => kl.clamp_min(free),
        };
        (term.mean(), kl_raw)
    }

    fn decode(&self, x: Tensor<2>, z: Tensor<2>) -> Head {
        let out = self.decoder.forward(Tensor::cat(vec![x, z], 1));
        heads::split_head(
            out,
            self.spec.obs_dim,
            Some((self.config.min_log_std, self.config.max_log_std)),
        )
    }

    fn noise(shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// Samples `z = mean + exp(log_std) * eps`.
    fn sample_latent(latent: &Latent) -> (Tensor<2>, Tensor<2>) {
        let eps = Self::noise(latent.mean.dims(), &latent.mean.device());
        (
            latent.mean.clone() + latent.log_std.clone().exp() * eps.clone(),
            eps,
        )
    }

    /// Mean of the prior `p(z | s, a)` (zeros for the standard prior).
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`, `action`: `[B, raw width]`; returns `[B, L]`
    pub fn prior_mean(&self, obs: Tensor<2>, action: Tensor<2>) -> Tensor<2> {
        let x = heads::model_input(&self.spec, &self.normalizer, obs, action);
        self.prior_or_standard(x).mean
    }

    /// Decoder outputs for given latents: mean and bounded log-std of the normalised change,
    /// normalised reward mean and termination logit.
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`, `action`: `[B, raw width]`, `z`: `[B, L]`
    /// - returns `([B, O], [B, O], [B], [B])`
    pub fn decode_latent(
        &self,
        obs: Tensor<2>,
        action: Tensor<2>,
        z: Tensor<2>,
    ) -> (Tensor<2>, Tensor<2>, Tensor<1>, Tensor<1>) {
        let x = heads::model_input(&self.spec, &self.normalizer, obs, action);
        assert_eq!(
            z.dims(),
            [x.dims()[0], self.config.latent_dim],
            "latent shape {:?}, expected [B, {}]",
            z.dims(),
            self.config.latent_dim
        );
        let h = self.decode(x, z);
        (
            h.delta_mean,
            h.delta_log_std.expect("decoder has a log-std"),
            h.reward_mean,
            h.term_logit,
        )
    }

    fn predict(&self, obs: Tensor<2>, action: Tensor<2>, sample: bool) -> Prediction {
        let x = heads::model_input(&self.spec, &self.normalizer, obs.clone(), action);
        let prior = self.prior_or_standard(x.clone());
        let z = if sample {
            Self::sample_latent(&prior).0
        } else {
            prior.mean
        };
        let h = self.decode(x, z);
        let log_std = h.delta_log_std.expect("decoder has a log-std");
        let delta = if sample {
            let eps = Self::noise(h.delta_mean.dims(), &h.delta_mean.device());
            h.delta_mean + log_std.exp() * eps
        } else {
            h.delta_mean
        };
        heads::prediction(&self.normalizer, obs, delta, h.reward_mean, h.term_logit)
    }

    /// Importance-weighted log-likelihood in normalised units (no Jacobian), `[B]`.
    fn iwae_normalised(&self, x: Tensor<2>, d_n: Tensor<2>, k: usize) -> Tensor<1> {
        let [b, _] = x.dims();
        let q = self.posterior_of(x.clone(), d_n.clone());
        let p = self.prior_of(x.clone());
        if k == 1 {
            let (z, _) = Self::sample_latent(&q);
            let h = self.decode(x, z);
            let recon =
                gaussian_log_prob_sum(d_n, h.delta_mean, h.delta_log_std.expect("decoder log-std"));
            return recon - self.kl(&q, p.as_ref());
        }
        let mut chunk_lse = Vec::new();
        let mut done = 0;
        while done < k {
            let c = self.config.iwae_chunk.min(k - done);
            done += c;
            let rep = |t: &Tensor<2>| t.clone().repeat_dim(0, c); // [c * B, .], row j * B + i
            let (mq, lq) = (rep(&q.mean), rep(&q.log_std));
            let eps = Self::noise(mq.dims(), &mq.device());
            let z = mq + lq.clone().exp() * eps.clone();
            let log_q = gaussian_log_prob_of_noise(eps, lq);
            let log_p = match &p {
                Some(p) => gaussian_log_prob_sum(z.clone(), rep(&p.mean), rep(&p.log_std)),
                None => gaussian_log_prob_of_noise(z.clone(), Tensor::zeros(z.dims(), &z.device())),
            };
            let h = self.decode(rep(&x), z);
            let log_x = gaussian_log_prob_sum(
                rep(&d_n),
                h.delta_mean,
                h.delta_log_std.expect("decoder log-std"),
            );
            let log_w = (log_x + log_p - log_q).reshape([c, b]);
            chunk_lse.push(logsumexp_dim0(log_w).reshape([1, b]));
        }
        let all = Tensor::cat(chunk_lse, 0);
        logsumexp_dim0(all).sub_scalar((k as f64).ln())
    }
}

impl TransitionModel for Cvae {
    fn loss(&self, batch: &TransitionTensors) -> LossOutput {
        heads::check_batch(&self.spec, batch);
        let x = heads::model_input(
            &self.spec,
            &self.normalizer,
            batch.obs.clone(),
            batch.action.clone(),
        );
        let d_n = self
            .normalizer
            .normalize_delta_tensor(batch.obs.clone(), batch.next_obs.clone());
        let q = self.posterior_of(x.clone(), d_n.clone());
        let p = self.prior_of(x.clone());
        let (z, _) = Self::sample_latent(&q);
        let h = self.decode(x, z);
        let log_std = h.delta_log_std.expect("decoder has a log-std");

        let delta_mse = (d_n.clone() - h.delta_mean.clone()).square().mean();
        let decoder_std_mean = log_std.clone().exp().mean();
        let recon = gaussian_log_prob_sum(d_n, h.delta_mean, log_std)
            .neg()
            .mean();
        let (kl, kl_raw) = self.kl_term(&q, p.as_ref());
        let reward_log_std = soft_bound_log_std(
            self.reward_log_std.val(),
            self.config.min_log_std,
            self.config.max_log_std,
        );
        let r_n = self
            .normalizer
            .normalize_reward_tensor(batch.reward.clone());
        let reward = heads::reward_nll(r_n, h.reward_mean, reward_log_std.clone()).mean();
        let termination = bce_with_logits(h.term_logit, batch.terminated.clone()).mean();

        let mut metrics = vec![
            ("kl_raw", kl_raw),
            ("decoder_std_mean", decoder_std_mean),
            ("posterior_std_mean", q.log_std.exp().mean()),
            ("reward_std", reward_log_std.exp()),
            ("delta_mse", delta_mse),
        ];
        if let Some(p) = p {
            metrics.push(("prior_std_mean", p.log_std.exp().mean()));
        }
        let c = &self.config;
        heads::assemble_loss(
            vec![
                ("recon", recon),
                ("kl", kl),
                ("reward", reward),
                ("termination", termination),
            ],
            vec![
                ("recon", c.recon_weight),
                ("kl", c.beta),
                ("reward", c.reward_weight),
                ("termination", c.termination_weight),
            ],
            metrics,
        )
    }

    fn sample_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        self.predict(obs, action, true)
    }

    fn mean_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        self.predict(obs, action, false)
    }

    fn log_likelihood(&self, batch: &TransitionTensors, n_samples: usize) -> Tensor<1> {
        assert!(n_samples > 0, "log_likelihood needs at least one sample");
        heads::check_batch(&self.spec, batch);
        let model = self.valid();
        let batch = batch.without_autodiff();
        let x = heads::model_input(
            &self.spec,
            &self.normalizer,
            batch.obs.clone(),
            batch.action,
        );
        let d_n = self
            .normalizer
            .normalize_delta_tensor(batch.obs, batch.next_obs);
        model
            .iwae_normalised(x, d_n, n_samples)
            .sub_scalar(self.normalizer.log_delta_std_sum())
    }

    fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{self, BimodalToy, LinearGaussianToy};
    use crate::{DeterministicMlpConfig, GaussianMlpConfig};
    use burn::optim::GradientsParams;

    fn tiny(prior: PriorKind) -> CvaeConfig {
        CvaeConfig {
            hidden: vec![32],
            latent_dim: 3,
            prior,
            ..Default::default()
        }
    }

    #[test]
    fn loss_terms_and_weights_have_the_same_names() {
        let (_rng, device) = test_util::seeded_device(1);
        let spec = BimodalToy::default().spec();
        let batch = test_util::random_batch(&spec, 8, &device);
        for prior in [PriorKind::Learned, PriorKind::Standard] {
            let model = tiny(prior).init(&spec, Normalizer::identity(1), &device);
            let loss = model.loss(&batch);
            let names: Vec<_> = loss.terms.keys().cloned().collect();
            assert_eq!(names, ["kl", "recon", "reward", "termination"]);
            assert!(
                loss.weights.keys().eq(loss.terms.keys()),
                "{:?} vs {:?}",
                loss.weights,
                names
            );
            for m in [
                "kl_raw",
                "decoder_std_mean",
                "posterior_std_mean",
                "reward_std",
                "delta_mse",
            ] {
                assert!(
                    loss.metrics[m].is_finite(),
                    "metric {m} in {:?}",
                    loss.metrics
                );
            }
            assert_eq!(
                loss.metrics.contains_key("prior_std_mean"),
                prior == PriorKind::Learned
            );
            // total is the weighted sum of the terms.
            let weighted: f64 = loss
                .terms
                .iter()
                .map(|(k, t)| loss.weights[k] * t.clone().into_scalar::<f32>() as f64)
                .sum();
            let total = loss.total.into_scalar::<f32>() as f64;
            assert!(
                (weighted - total).abs() < 1e-4 * total.abs().max(1.0),
                "{weighted} vs {total}"
            );
        }
    }

    /// With `free_nats` above every transition's KL the `kl` term contributes no gradient to
    /// the posterior (while the learned prior still gets one); with `free_nats = 0` the
    /// posterior gets a KL gradient.
    #[test]
    fn free_bits_zero_the_kl_gradient_below_the_threshold() {
        let (_rng, device) = test_util::seeded_device(2);
        let device = device.autodiff();
        let spec = BimodalToy::default().spec();
        let batch = test_util::random_batch(&spec, 16, &device);
        let grad_sums = |free_nats: f64| {
            let model = CvaeConfig {
                free_nats,
                ..tiny(PriorKind::Learned)
            }
            .init(&spec, Normalizer::identity(1), &device);
            let loss = model.loss(&batch);
            assert!(loss.metrics["kl_raw"] < 1e3);
            let grads = GradientsParams::from_grads(loss.terms["kl"].backward(), &model);
            let sum = |id| {
                grads
                    .get::<2>(id)
                    .map(|g| g.abs().sum().into_scalar::<f32>())
                    .unwrap_or(0.0)
            };
            let prior = model.prior.as_ref().expect("learned prior");
            (
                sum(model.posterior.layers[0].weight.id),
                sum(prior.layers[0].weight.id),
            )
        };
        let (posterior_below, prior_below) = grad_sums(1e3);
        let (posterior_above, prior_above) = grad_sums(0.0);
        assert_eq!(
            posterior_below, 0.0,
            "posterior KL gradient below the free-bits threshold"
        );
        assert!(
            prior_below > 0.0,
            "the learned prior keeps its KL gradient below the threshold"
        );
        assert!(
            posterior_above > 0.0 && prior_above > 0.0,
            "KL gradients without free bits should be non-zero"
        );
    }

    /// IWAE bounds tighten with k (k = 1000 >= k = 64 >= k = 1, averaged over 300
    /// transitions) on a briefly trained model, and k = 1 equals the ELBO from the loss terms
    /// (beta = 1, no free bits) for the same latent sample.
    #[test]
    fn iwae_bound_increases_with_samples_and_k1_equals_the_elbo() {
        let toy = BimodalToy::default();
        let (_rng, device) = test_util::seeded_device(4);
        let device = device.autodiff();
        let mut rng = test_util::rng(4);
        let config = CvaeConfig {
            hidden: vec![32, 32],
            latent_dim: 2,
            ..Default::default()
        };
        let model = config.init(&toy.spec(), toy.normalizer(&mut rng), &device);
        let model =
            test_util::train(model, 1000, 3e-3, |r| toy.batch(r, 128, &device), &mut rng).valid();
        let plain = device.clone().without_autodiff();
        let test = toy.batch(&mut rng, 300, &plain);
        plain.seed(10);
        let k1 = test_util::mean(model.log_likelihood(&test, 1));
        let k64 = test_util::mean(model.log_likelihood(&test, 64));
        let k1000 = test_util::mean(model.log_likelihood(&test, 1000));
        eprintln!("IWAE: k=1 {k1:.4}, k=64 {k64:.4}, k=1000 {k1000:.4}");
        assert!(
            k1000 >= k64 && k64 >= k1,
            "k=1 {k1}, k=64 {k64}, k=1000 {k1000}"
        );

        // Same seed, same first random draw: the loss's z equals log_likelihood's z for k = 1.
        plain.seed(20);
        let loss = model.loss(&test);
        let elbo = -(loss.terms["recon"].clone().into_scalar::<f32>() as f64
            + loss.metrics["kl_raw"])
            - model.normalizer().log_delta_std_sum();
        plain.seed(20);
        let k1_same = test_util::mean(model.log_likelihood(&test, 1));
        assert!(
            (k1_same - elbo).abs() < 1e-4 * elbo.abs().max(1.0),
            "k=1 bound {k1_same} vs ELBO {elbo}"
        );
    }

    /// On the linear-Gaussian toy (no latent structure needed) the cVAE's IWAE (k = 64)
    /// estimate comes within 0.1 nats per dimension of the true conditional entropy.
    #[test]
    fn cvae_iwae_reaches_the_true_conditional_entropy_on_a_linear_gaussian_toy() {
        let toy = LinearGaussianToy::default();
        let (_rng, device) = test_util::seeded_device(8);
        let device = device.autodiff();
        let mut rng = test_util::rng(2);
        let config = CvaeConfig {
            hidden: vec![64, 64],
            latent_dim: 2,
            ..Default::default()
        };
        let model = config.init(&toy.spec(), toy.normalizer(&mut rng), &device);
        let model =
            test_util::train(model, 1500, 3e-3, |r| toy.batch(r, 128, &device), &mut rng).valid();
        let test = toy.batch(
            &mut test_util::rng(99),
            2048,
            &device.clone().without_autodiff(),
        );
        let nll = -test_util::mean(model.log_likelihood(&test, 64)) / 2.0;
        let entropy = toy.conditional_entropy_per_dim();
        eprintln!(
            "linear-Gaussian toy: cVAE IWAE-64 NLL {nll:.4} nats/dim, true entropy {entropy:.4}"
        );
        assert!(
            (nll - entropy).abs() < 0.1,
            "NLL {nll} nats/dim vs entropy {entropy}"
        );
    }

    /// The central claim: on a bimodal transition (s' = s +- 1 with probability 1/2, noise
    /// 0.05) the cVAE's held-out likelihood beats the Gaussian MLP's by more than 1 nat, its
    /// samples land in both modes, and the deterministic model predicts the blurred mean.
    ///
    /// What makes it robust: free bits (the default 1 nat; with 0 the posterior collapses in the
    /// first hundred steps and the cVAE ends at the Gaussian's NLL), a learned prior, latent
    /// width 2, Adam at 3e-3 for 2000 steps of 128 then 1000 steps at 6e-4, which sharpens the
    /// decoder's switch between the modes (observed NLL -0.52 to -0.57 over seeds 12-18 against
    /// the Gaussian's 1.42 and the true entropy -0.88; 82-85% of samples within 0.3 of a mode,
    /// the rest fall between the modes where the decoder switches from one to the other; with
    /// a single 3000-step phase at 3e-3 the NLL spread is -0.35 to -0.52 and 80-83%).
    #[test]
    fn cvae_captures_a_bimodal_transition_that_the_baselines_blur() {
        let toy = BimodalToy::default();
        let (_rng, device) = test_util::seeded_device(12);
        let device = device.autodiff();
        let mut rng = test_util::rng(12);
        let normalizer = toy.normalizer(&mut rng);
        let spec = toy.spec();
        let plain = device.clone().without_autodiff();
        let test = toy.batch(&mut test_util::rng(77), 1000, &plain);

        let untrained = CvaeConfig {
            hidden: vec![64, 64],
            latent_dim: 2,
            ..Default::default()
        }
        .init(&spec, normalizer.clone(), &device);
        let untrained_nll = -test_util::mean(untrained.log_likelihood(&test, 64));

        let cvae = test_util::train(
            untrained,
            2000,
            3e-3,
            |r| toy.batch(r, 128, &device),
            &mut rng,
        );
        let cvae =
            test_util::train(cvae, 1000, 6e-4, |r| toy.batch(r, 128, &device), &mut rng).valid();
        let gauss = GaussianMlpConfig {
            hidden: vec![64, 64],
            ..Default::default()
        }
        .init(&spec, normalizer.clone(), &device);
        let gauss =
            test_util::train(gauss, 1000, 3e-3, |r| toy.batch(r, 128, &device), &mut rng).valid();
        let det = DeterministicMlpConfig {
            hidden: vec![64, 64],
            ..Default::default()
        }
        .init(&spec, normalizer, &device);
        let det =
            test_util::train(det, 1000, 3e-3, |r| toy.batch(r, 128, &device), &mut rng).valid();

        let cvae_nll = -test_util::mean(cvae.log_likelihood(&test, 64));
        let gauss_nll = -test_util::mean(gauss.log_likelihood(&test, 1));
        eprintln!(
            "bimodal toy: cVAE IWAE-64 NLL {cvae_nll:.4} (untrained {untrained_nll:.4}), Gaussian MLP NLL {gauss_nll:.4}, true entropy {:.4}",
            toy.conditional_entropy()
        );
        assert!(
            cvae_nll < gauss_nll - 1.0,
            "cVAE NLL {cvae_nll} vs Gaussian {gauss_nll}"
        );
        assert!(
            untrained_nll > gauss_nll - 1.0,
            "an untrained cVAE ({untrained_nll}) must not pass the margin"
        );

        let obs = test_util::to_vec2(test.obs.clone());
        let samples = test_util::to_vec2(
            cvae.sample_next(test.obs.clone(), test.action.clone())
                .next_obs,
        );
        let n = obs.len() as f64;
        let above = obs.iter().zip(&samples).filter(|(s, x)| *x > *s).count() as f64 / n;
        let near_mode = obs
            .iter()
            .zip(&samples)
            .filter(|(s, x)| ((*x - *s).abs() - 1.0).abs() < 0.3)
            .count() as f64
            / n;
        let det_mean = test_util::to_vec2(
            det.mean_next(test.obs.clone(), test.action.clone())
                .next_obs,
        );
        let det_err = obs
            .iter()
            .zip(&det_mean)
            .map(|(s, m)| (m - s).abs() as f64)
            .sum::<f64>()
            / n;
        eprintln!(
            "bimodal toy: fraction above s {above:.3}, within 0.3 of a mode {near_mode:.3}, deterministic |mean - s| {det_err:.3}"
        );
        assert!(
            (0.3..=0.7).contains(&above),
            "fraction of samples above s: {above}"
        );
        assert!(
            near_mode > 0.75,
            "fraction of samples within 0.3 of a mode: {near_mode}"
        );
        assert!(
            det_err < 0.3,
            "deterministic mean should be the blurred mean s: |mean - s| = {det_err}"
        );
    }
}
