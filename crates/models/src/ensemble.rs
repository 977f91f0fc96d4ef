//! The probabilistic ensemble of PETS (Chua et al. 2018, as in mbrl-lib's `GaussianMLP` with
//! `ensemble_size > 1`): `M` Gaussian MLPs over the normalised state change, each trained on its
//! own bootstrap resample of the batch, with log standard deviations softly clamped between
//! learned per-output bounds. Aleatoric noise is each member's Gaussian; epistemic uncertainty
//! is the members' disagreement.
//!
//! # Batched members
//! The members are one computation, not a loop: every layer holds its weights as `[M, in, out]`
//! and its bias as `[M, 1, out]`, and a layer is the batched matmul
//! `[M, B, in] x [M, in, out] + [M, 1, out]` (burn 0.22's `Tensor::<3>::matmul` multiplies
//! batches of matrices). Training feeds each member its own rows (`[M, B, in]` from the
//! bootstrap indices); prediction feeds all members the same rows.
//!
//! # Sampling (trajectory sampling, PETS section 4)
//! [`Propagation`] says how a sampled step picks the member of each row:
//! - `Ts1`: a fresh uniformly random member per row at every step;
//! - `TsInf`: one member per row for the whole trajectory. The member must survive between
//!   steps, so it lives in the imagination state (`wm_imagine::OneStepState::member`); here,
//!   [`ProbabilisticEnsemble::sample_next_from`] samples from given members and
//!   [`ProbabilisticEnsemble::draw_members`] draws them;
//! - `Expectation`: no member choice; the members' means and log-stds are averaged (mbrl-lib's
//!   `propagation_method="expectation"`) and that Gaussian is sampled.
//!
//! A single [`TransitionModel::sample_next`] call has no trajectory to fix a member along, so
//! under `TsInf` it draws members as `Ts1` does. [`TransitionModel::mean_next`] (the central
//! prediction that planners score with) is the mixture mean: the average of the members'
//! means, rewards and termination probabilities.
//!
//! # Not here
//! mbrl-lib's *elites* (keeping the best `E` of `M` members by a held-out loss computed by the
//! trainer) are not implemented: every member is used.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::activation::{silu, softplus};
use burn::tensor::{Device, Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::dist::{
    LN_2PI, bce_with_logits, bernoulli_prob, gaussian_log_prob_sum, logsumexp_dim0,
    soft_bound_log_std,
};
use crate::heads;
use crate::validate::{self, InvalidField};
use crate::{LossOutput, ModelSpec, Normalizer, Prediction, TransitionModel, TransitionTensors};

/// The largest ensemble a config may ask for.
pub const MAX_MEMBERS: usize = 64;

/// Bounds of the members' reward log-std (normalised units), as the Gaussian MLP's defaults.
const REWARD_LOG_STD_BOUNDS: (f64, f64) = (-5.0, 2.0);

/// How a sampled imagination step chooses the member of each row (PETS trajectory sampling).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    /// TS-1: a uniformly random member per row at every step.
    Ts1,
    /// TS-∞: a uniformly random member per row, drawn once and kept along the trajectory.
    #[default]
    TsInf,
    /// The Gaussian of the members' averaged means and log-stds (no member choice).
    Expectation,
}

/// Hyper-parameters of [`ProbabilisticEnsemble`]; every field has a serde default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnsembleConfig {
    /// Number of members `M`. Default 5 (PETS).
    pub members: usize,
    /// Hidden layer widths of every member (SiLU between layers, as the Gaussian MLP).
    /// Default `[256, 256]`.
    pub hidden: Vec<usize>,
    /// How sampled imagination picks members. Default `TsInf`.
    pub propagation: Propagation,
    /// Whether each member trains on its own bootstrap resample of the batch (`false`: every
    /// member sees the batch as it is, and only the initialisation differs). Default `true`.
    pub bootstrap: bool,
    /// Initial value of the learned lower log-std bound of every output (normalised units).
    /// Default `-5` (mbrl-lib's `min_logvar = -10`).
    pub init_min_log_std: f64,
    /// Initial value of the learned upper log-std bound of every output. Default `0.25`
    /// (mbrl-lib's `max_logvar = 0.5`).
    pub init_max_log_std: f64,
    /// Weight of the `log_std_bounds` term, `sum_o (max_o - min_o)` over the learned log-std
    /// bounds. Default `0.02`: mbrl-lib's `0.01 * (sum max_logvar - sum min_logvar)` in log-std
    /// units.
    pub bound_weight: f64,
    /// Weight of the `recon` term (next-observation NLL, summed over members). Default `1`.
    pub recon_weight: f64,
    /// Weight of the `reward` term (reward NLL, summed over members). Default `1`.
    pub reward_weight: f64,
    /// Weight of the `termination` term (BCE, summed over members). Default `1`.
    pub termination_weight: f64,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        Self {
            members: 5,
            hidden: vec![256, 256],
            propagation: Propagation::TsInf,
            bootstrap: true,
            init_min_log_std: -5.0,
            init_max_log_std: 0.25,
            bound_weight: 0.02,
            recon_weight: 1.0,
            reward_weight: 1.0,
            termination_weight: 1.0,
        }
    }
}

impl EnsembleConfig {
    /// The first field out of range: `members` in `1..=MAX_MEMBERS`, widths in
    /// `1..=MAX_WIDTH`, weights finite in `[0, 1e6]`, initial log-std bounds finite in
    /// `[-20, 20]` with `init_min_log_std < init_max_log_std`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate::count("members", self.members, MAX_MEMBERS)?;
        validate::widths("hidden", &self.hidden)?;
        for (field, value) in [
            ("bound_weight", self.bound_weight),
            ("recon_weight", self.recon_weight),
            ("reward_weight", self.reward_weight),
            ("termination_weight", self.termination_weight),
        ] {
            validate::within(field, value, 0.0, 1e6)?;
        }
        validate::log_std_bounds(
            "init_min_log_std",
            self.init_min_log_std,
            self.init_max_log_std,
        )
    }

    /// Builds the ensemble on `device` (weights drawn from the device RNG at first use, as
    /// burn's `Linear`: uniform in `±1/sqrt(fan_in)`).
    ///
    /// # Panics
    /// If the spec or the normaliser is inconsistent, or the config does not pass
    /// [`EnsembleConfig::validate`].
    pub fn init(
        &self,
        spec: &ModelSpec,
        normalizer: Normalizer,
        device: &Device,
    ) -> ProbabilisticEnsemble {
        spec.validate().expect("invalid model spec");
        normalizer
            .validate(spec.obs_dim)
            .expect("normalizer does not fit the spec");
        if let Err(invalid) = self.validate() {
            panic!("ensemble config: {invalid}");
        }
        let o = spec.obs_dim;
        let input = o + spec.action.input_width();
        let bound = |value: f64| Initializer::Constant { value }.init::<3, _>([1, 1, o], device);
        ProbabilisticEnsemble {
            net: EnsembleMlp::new(
                self.members,
                input,
                &self.hidden,
                heads::head_width(o, true),
                device,
            ),
            min_log_std: bound(self.init_min_log_std),
            max_log_std: bound(self.init_max_log_std),
            reward_log_std: Initializer::Zeros.init([self.members, 1], device),
            normalizer,
            spec: spec.clone(),
            config: self.clone(),
        }
    }
}

/// `M` MLPs of the same shape evaluated together: SiLU between layers, none after the last.
#[derive(Module, Debug)]
pub struct EnsembleMlp {
    /// Layer weights, input first, each `[M, in, out]`.
    pub weights: Vec<Param<Tensor<3>>>,
    /// Layer biases, each `[M, 1, out]`.
    pub biases: Vec<Param<Tensor<3>>>,
}

impl EnsembleMlp {
    fn new(members: usize, input: usize, hidden: &[usize], output: usize, device: &Device) -> Self {
        // burn's `Linear` default: uniform in +-1/sqrt(fan_in) for weights and biases.
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        };
        let mut widths = vec![input];
        widths.extend_from_slice(hidden);
        widths.push(output);
        let (weights, biases) = widths
            .windows(2)
            .map(|w| {
                (
                    init.init_with([members, w[0], w[1]], Some(w[0]), Some(w[1]), device),
                    init.init_with([members, 1, w[1]], Some(w[0]), Some(w[1]), device),
                )
            })
            .unzip();
        Self { weights, biases }
    }

    /// Number of members `M`.
    pub fn members(&self) -> usize {
        self.weights[0].dims()[0]
    }

    /// Applies member `m` to `x[m]` for every `m`.
    ///
    /// # Shapes
    /// - `x`: `[M, B, in]`; returns `[M, B, out]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [m, input, _] = self.weights[0].dims();
        assert!(
            x.dims()[0] == m && x.dims()[2] == input,
            "EnsembleMlp::forward: input shape {:?}, expected [{m}, B, {input}]",
            x.dims()
        );
        let last = self.weights.len() - 1;
        let mut h = x;
        for (i, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            h = h.matmul(w.val()) + b.val();
            if i < last {
                h = silu(h);
            }
        }
        h
    }
}

/// The PETS soft clamp of a log-std between a lower and an upper bound (mbrl-lib's
/// `GaussianMLP._forward_from_indices`, on log-stds instead of log-variances):
/// `l = max - softplus(max - raw)`, then `min + softplus(l - min)`. Smooth and increasing;
/// the result is above `min` and below `max + ln(1 + exp(min - max))`, for any `raw`.
///
/// # Shapes
/// - `raw`: `[M, B, O]`; `min`, `max`: broadcastable to it (`[1, 1, O]`); returns `[M, B, O]`
pub fn pets_soft_clamp(raw: Tensor<3>, min: Tensor<3>, max: Tensor<3>) -> Tensor<3> {
    let upper = max.clone() - softplus(max - raw, 1.0);
    min.clone() + softplus(upper - min, 1.0)
}

/// `ln (1/M) sum_m N(x; mean_m, exp(log_std_m)^2)`, the log-density of an equal mixture of
/// diagonal Gaussians (log-mean-exp of the member densities), summed over features.
///
/// # Shapes
/// - `x`: `[B, O]`; `mean`, `log_std`: `[M, B, O]`; returns `[B]`
pub fn mixture_log_prob(x: Tensor<2>, mean: Tensor<3>, log_std: Tensor<3>) -> Tensor<1> {
    let [m, b, o] = mean.dims();
    assert!(
        x.dims() == [b, o] && log_std.dims() == [m, b, o],
        "mixture_log_prob: x shape {:?}, mean shape {:?}, log_std shape {:?}; expected [B, O], [M, B, O], [M, B, O]",
        x.dims(),
        mean.dims(),
        log_std.dims()
    );
    let x = x.unsqueeze_dim::<3>(0).repeat_dim(0, m).reshape([m * b, o]);
    let per_member =
        gaussian_log_prob_sum(x, mean.reshape([m * b, o]), log_std.reshape([m * b, o]));
    logsumexp_dim0(per_member.reshape([m, b])).sub_scalar((m as f64).ln())
}

/// Every member's outputs for a batch, in normalised units.
#[derive(Clone, Debug)]
pub struct MemberOutputs {
    /// Mean of the normalised change, `[M, B, O]`.
    pub delta_mean: Tensor<3>,
    /// Clamped log-std of the normalised change, `[M, B, O]`.
    pub delta_log_std: Tensor<3>,
    /// Mean of the normalised reward, `[M, B]`.
    pub reward_mean: Tensor<2>,
    /// Termination logit, `[M, B]`.
    pub term_logit: Tensor<2>,
}

/// `p(s' | s, a) = (1/M) sum_m N(s + delta_mean + delta_std * mu_m(s, a),
/// diag(delta_std * sigma_m(s, a))^2)`: `M` bootstrapped Gaussian MLPs with learned soft
/// log-std bounds (see the module documentation).
///
/// - loss: per member, the exact NLL of the next observation (`recon`), the reward NLL and the
///   termination BCE on the member's bootstrap resample, each a batch mean, summed over
///   members; plus `log_std_bounds`, `sum_o (max_o - min_o)`.
/// - `sample_next`: a random member per row (or the averaged Gaussian under `Expectation`),
///   then its Gaussian; `mean_next`: the mixture mean.
/// - `log_likelihood`: the exact mixture density (`n_samples` is ignored).
#[derive(Module, Debug)]
pub struct ProbabilisticEnsemble {
    /// `[s_n, a] -> [mean (O) | raw log-std (O) | reward | termination logit]` per member.
    pub net: EnsembleMlp,
    /// Learned lower log-std bound of each output, `[1, 1, O]`, shared by the members.
    pub min_log_std: Param<Tensor<3>>,
    /// Learned upper log-std bound of each output, `[1, 1, O]`, shared by the members.
    pub max_log_std: Param<Tensor<3>>,
    /// Raw (unbounded) log-std of each member's normalised reward, `[M, 1]`.
    pub reward_log_std: Param<Tensor<2>>,
    #[module(skip)]
    normalizer: Normalizer,
    #[module(skip)]
    spec: ModelSpec,
    #[module(skip)]
    config: EnsembleConfig,
}

impl ProbabilisticEnsemble {
    /// The spec the model was built for.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The config the model was built with.
    pub fn config(&self) -> &EnsembleConfig {
        &self.config
    }

    /// Number of members `M`.
    pub fn members(&self) -> usize {
        self.config.members
    }

    /// The configured propagation.
    pub fn propagation(&self) -> Propagation {
        self.config.propagation
    }

    /// Every member's outputs on the same inputs.
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`, `action`: `[B, raw width]`; see [`MemberOutputs`]
    pub fn member_outputs(&self, obs: Tensor<2>, action: Tensor<2>) -> MemberOutputs {
        let x = heads::model_input(&self.spec, &self.normalizer, obs, action);
        let m = self.members();
        self.split(self.net.forward(x.unsqueeze_dim::<3>(0).repeat_dim(0, m)))
    }

    /// Splits the raw outputs `[M, B, 2O + 2]` and clamps the log-std.
    fn split(&self, out: Tensor<3>) -> MemberOutputs {
        let [m, b, w] = out.dims();
        let o = self.spec.obs_dim;
        assert_eq!(
            w,
            heads::head_width(o, true),
            "ensemble head output shape {:?}, obs_dim {o}",
            out.dims()
        );
        let raw_log_std = out.clone().narrow(2, o, o);
        MemberOutputs {
            delta_mean: out.clone().narrow(2, 0, o),
            delta_log_std: pets_soft_clamp(
                raw_log_std,
                self.min_log_std.val(),
                self.max_log_std.val(),
            ),
            reward_mean: out.clone().narrow(2, 2 * o, 1).reshape([m, b]),
            term_logit: out.narrow(2, 2 * o + 1, 1).reshape([m, b]),
        }
    }

    /// The rows each member trains on: `B` indices drawn uniformly with replacement per member
    /// from the device RNG (so a seeded device reproduces them), or `0..B` for every member
    /// without bootstrapping.
    ///
    /// # Shapes
    /// - returns `[M, B]`
    pub fn bootstrap_indices(&self, batch: usize, device: &Device) -> Tensor<2, Int> {
        let m = self.members();
        if !self.config.bootstrap {
            return Tensor::<1, Int>::arange(0..batch as i64, device)
                .unsqueeze_dim::<2>(0)
                .repeat_dim(0, m);
        }
        Tensor::<2>::random([m, batch], Distribution::Uniform(0.0, batch as f64), device)
            .floor()
            .int()
            .clamp(0, batch as i64 - 1)
    }

    /// A uniformly random member for each of `batch` rows, from the device RNG.
    ///
    /// # Shapes
    /// - returns `[batch]`
    pub fn draw_members(&self, batch: usize, device: &Device) -> Tensor<1, Int> {
        let m = self.members();
        Tensor::<1>::random([batch], Distribution::Uniform(0.0, m as f64), device)
            .floor()
            .int()
            .clamp(0, m as i64 - 1)
    }

    /// A sample of `s'` from member `members[b]` for each row `b` (its Gaussian; the reward
    /// and termination probability are that member's).
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`, `action`: `[B, raw width]`, `members`: `[B]` in `0..M`
    pub fn sample_next_from(
        &self,
        obs: Tensor<2>,
        action: Tensor<2>,
        members: Tensor<1, Int>,
    ) -> Prediction {
        let [b, o] = obs.dims();
        assert_eq!(
            members.dims(),
            [b],
            "members shape {:?}, expected [{b}] for obs shape {:?}",
            members.dims(),
            obs.dims()
        );
        let m = self.members();
        let device = obs.device();
        let out = self.member_outputs(obs.clone(), action);
        // Row `member * B + b` of the flattened `[M * B, ..]` outputs is member `member` on row `b`.
        let rows = members.mul_scalar(b as i64) + Tensor::<1, Int>::arange(0..b as i64, &device);
        let pick2 = |t: Tensor<3>| t.reshape([m * b, o]).select(0, rows.clone());
        let pick1 = |t: Tensor<2>| t.reshape([m * b]).select(0, rows.clone());
        let mean = pick2(out.delta_mean);
        let log_std = pick2(out.delta_log_std);
        let eps = Tensor::random(mean.shape(), Distribution::Normal(0.0, 1.0), &device);
        heads::prediction(
            &self.normalizer,
            obs,
            mean + log_std.exp() * eps,
            pick1(out.reward_mean),
            pick1(out.term_logit),
        )
    }

    /// A sample from the Gaussian of the members' averaged means and log-stds (mbrl-lib's
    /// expectation propagation), with the averaged reward and termination probability.
    fn sample_expectation(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        let [b, o] = obs.dims();
        let out = self.member_outputs(obs.clone(), action);
        let mean = out.delta_mean.mean_dim(0).reshape([b, o]);
        let log_std = out.delta_log_std.mean_dim(0).reshape([b, o]);
        let eps = Tensor::random(mean.shape(), Distribution::Normal(0.0, 1.0), &mean.device());
        self.averaged_prediction(
            obs,
            mean + log_std.exp() * eps,
            out.reward_mean,
            out.term_logit,
        )
    }

    /// A prediction with the members' average reward and termination probability.
    fn averaged_prediction(
        &self,
        obs: Tensor<2>,
        delta_n: Tensor<2>,
        reward_mean: Tensor<2>,
        term_logit: Tensor<2>,
    ) -> Prediction {
        let [_, b] = reward_mean.dims();
        let m = self.members();
        let reward_n = reward_mean.mean_dim(0).reshape([b]);
        let terminated_prob = bernoulli_prob(term_logit.reshape([m * b]))
            .reshape([m, b])
            .mean_dim(0)
            .reshape([b]);
        Prediction {
            next_obs: self.normalizer.next_obs_from_delta_tensor(obs, delta_n),
            reward: self.normalizer.denormalize_reward_tensor(reward_n),
            terminated_prob,
        }
    }

    fn reward_log_std_bounded(&self) -> Tensor<2> {
        soft_bound_log_std(
            self.reward_log_std.val(),
            REWARD_LOG_STD_BOUNDS.0,
            REWARD_LOG_STD_BOUNDS.1,
        )
    }
}

impl TransitionModel for ProbabilisticEnsemble {
    fn loss(&self, batch: &TransitionTensors) -> LossOutput {
        heads::check_batch(&self.spec, batch);
        let b = batch.batch_size();
        let (m, o) = (self.members(), self.spec.obs_dim);
        let device = batch.obs.device();
        let rows = self.bootstrap_indices(b, &device).reshape([m * b]);
        let x = heads::model_input(
            &self.spec,
            &self.normalizer,
            batch.obs.clone(),
            batch.action.clone(),
        );
        let width = x.dims()[1];
        // [M * B, in] -> [M, B, in]: member m reads its own resample.
        let x = x.select(0, rows.clone()).reshape([m, b, width]);
        let out = self.split(self.net.forward(x));
        let d_n = self
            .normalizer
            .normalize_delta_tensor(batch.obs.clone(), batch.next_obs.clone())
            .select(0, rows.clone());
        let mean = out.delta_mean.reshape([m * b, o]);
        let log_std = out.delta_log_std.reshape([m * b, o]);
        let sq_err = (d_n.clone() - mean.clone()).square().mean();
        let std_mean = log_std.clone().exp().mean();
        // Per member: a batch mean; then the sum over members.
        let per_member = |rows_values: Tensor<1>| rows_values.reshape([m, b]).mean_dim(1).sum();
        let recon = per_member(gaussian_log_prob_sum(d_n, mean, log_std).neg());

        let reward_log_std = self.reward_log_std_bounded(); // [M, 1]
        let r_n = self
            .normalizer
            .normalize_reward_tensor(batch.reward.clone())
            .select(0, rows.clone())
            .reshape([m, b]);
        let z = (r_n - out.reward_mean) * reward_log_std.clone().neg().exp();
        let reward = (z.square().mul_scalar(0.5) + reward_log_std.clone().add_scalar(0.5 * LN_2PI))
            .mean_dim(1)
            .sum();
        let termination = per_member(bce_with_logits(
            out.term_logit.reshape([m * b]),
            batch.terminated.clone().select(0, rows),
        ));
        let (min, max) = (self.min_log_std.val(), self.max_log_std.val());
        let log_std_bounds = (max.clone() - min.clone()).sum();
        let c = &self.config;
        heads::assemble_loss(
            vec![
                ("recon", recon),
                ("reward", reward),
                ("termination", termination),
                ("log_std_bounds", log_std_bounds),
            ],
            vec![
                ("recon", c.recon_weight),
                ("reward", c.reward_weight),
                ("termination", c.termination_weight),
                ("log_std_bounds", c.bound_weight),
            ],
            vec![
                ("delta_mse", sq_err),
                ("delta_std_mean", std_mean),
                ("reward_std", reward_log_std.exp().mean()),
                ("max_log_std_mean", max.mean()),
                ("min_log_std_mean", min.mean()),
            ],
        )
    }

    fn sample_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        match self.config.propagation {
            Propagation::Ts1 | Propagation::TsInf => {
                let members = self.draw_members(obs.dims()[0], &obs.device());
                self.sample_next_from(obs, action, members)
            }
            Propagation::Expectation => self.sample_expectation(obs, action),
        }
    }

    fn mean_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        let [b, o] = obs.dims();
        let out = self.member_outputs(obs.clone(), action);
        let mean = out.delta_mean.mean_dim(0).reshape([b, o]);
        self.averaged_prediction(obs, mean, out.reward_mean, out.term_logit)
    }

    fn log_likelihood(&self, batch: &TransitionTensors, _n_samples: usize) -> Tensor<1> {
        heads::check_batch(&self.spec, batch);
        let model = self.valid();
        let batch = batch.without_autodiff();
        let out = model.member_outputs(batch.obs.clone(), batch.action);
        let d_n = self
            .normalizer
            .normalize_delta_tensor(batch.obs, batch.next_obs);
        mixture_log_prob(d_n, out.delta_mean, out.delta_log_std)
            .sub_scalar(self.normalizer.log_delta_std_sum())
    }

    fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{self, to_vec2};
    use crate::{ActionSpec, TransitionModel};
    use burn::tensor::TensorData;
    use rand::Rng;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn host_int<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    fn spec_1d() -> ModelSpec {
        ModelSpec {
            obs_dim: 1,
            action: ActionSpec::Continuous {
                low: vec![-1.0],
                high: vec![1.0],
            },
        }
    }

    fn tiny(members: usize, spec: &ModelSpec, device: &Device) -> ProbabilisticEnsemble {
        EnsembleConfig {
            members,
            hidden: vec![16],
            ..Default::default()
        }
        .init(spec, Normalizer::identity(spec.obs_dim), device)
    }

    #[test]
    fn ensemble_outputs_and_predictions_have_the_documented_shapes() {
        let (_rng, device) = test_util::seeded_device(1);
        let spec = ModelSpec {
            obs_dim: 3,
            action: ActionSpec::Discrete { n: 4 },
        };
        let model = tiny(4, &spec, &device);
        let batch = test_util::random_batch(&spec, 6, &device);
        let out = model.member_outputs(batch.obs.clone(), batch.action.clone());
        for (name, dims, want) in [
            ("delta_mean", out.delta_mean.dims().to_vec(), vec![4, 6, 3]),
            (
                "delta_log_std",
                out.delta_log_std.dims().to_vec(),
                vec![4, 6, 3],
            ),
            ("reward_mean", out.reward_mean.dims().to_vec(), vec![4, 6]),
            ("term_logit", out.term_logit.dims().to_vec(), vec![4, 6]),
        ] {
            assert_eq!(dims, want, "{name}: actual shape {dims:?}");
        }
        let members = model.draw_members(6, &device);
        for p in [
            model.sample_next(batch.obs.clone(), batch.action.clone()),
            model.mean_next(batch.obs.clone(), batch.action.clone()),
            model.sample_next_from(batch.obs.clone(), batch.action.clone(), members),
        ] {
            assert_eq!(p.next_obs.dims(), [6, 3], "actual {:?}", p.next_obs.dims());
            assert_eq!(p.reward.dims(), [6], "actual {:?}", p.reward.dims());
            assert_eq!(p.terminated_prob.dims(), [6]);
        }
        assert_eq!(model.bootstrap_indices(6, &device).dims(), [4, 6]);
        let ll = model.log_likelihood(&batch, 1);
        assert_eq!(ll.dims(), [6], "actual {:?}", ll.dims());
        let loss = model.loss(&batch);
        assert_eq!(
            loss.terms.keys().collect::<Vec<_>>(),
            ["log_std_bounds", "recon", "reward", "termination"]
        );
        assert!(loss.total.into_scalar::<f32>().is_finite());
    }

    #[test]
    #[should_panic(expected = "members shape [2], expected [3]")]
    fn sampling_from_members_of_the_wrong_length_panics_with_the_shapes() {
        let (_rng, device) = test_util::seeded_device(2);
        let model = tiny(2, &spec_1d(), &device);
        let members = Tensor::<1, Int>::from_ints([0, 1], &device);
        model.sample_next_from(
            Tensor::zeros([3, 1], &device),
            Tensor::zeros([3, 1], &device),
            members,
        );
    }

    // Reference (python3, `math` only):
    // ```python
    // L2P = math.log(2 * math.pi)
    // def lp(x, m, ls): z = (x - m) / math.exp(ls); return -0.5 * z * z - ls - 0.5 * L2P
    // for x in [0.5, -2.0]:
    //     a = [lp(x, 0.0, 0.0), lp(x, 1.0, math.log(0.5))]
    //     print(math.log(0.5 * (math.exp(a[0]) + math.exp(a[1]))))
    // ```
    // Output: -0.8722657414632093, -3.612085488694294
    // (member densities at x = 0.5: e^-1.04394 = 0.35207 and e^-0.72579 = 0.48394, mean 0.41800)
    #[test]
    fn mixture_log_density_of_two_one_dimensional_members_matches_a_hand_computation() {
        let device = wm_backend::test_device();
        let x = Tensor::<2>::from_floats([[0.5], [-2.0]], &device);
        let mean = Tensor::<3>::from_floats([[[0.0], [0.0]], [[1.0], [1.0]]], &device);
        let half = 0.5f32.ln();
        let log_std = Tensor::<3>::from_floats([[[0.0], [0.0]], [[half], [half]]], &device);
        let got = host(mixture_log_prob(x, mean, log_std));
        let want = [-0.872_265_741_463_209_3, -3.612_085_488_694_294];
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn log_likelihood_is_the_mixture_of_the_member_densities_in_raw_units() {
        let (_rng, device) = test_util::seeded_device(3);
        let spec = spec_1d();
        let normalizer = Normalizer::fit(&[0.0, 1.0, 2.0], &[0.5, 2.0, 1.0], &[0.0; 3], 1);
        let model = EnsembleConfig {
            members: 3,
            hidden: vec![8],
            ..Default::default()
        }
        .init(&spec, normalizer.clone(), &device);
        let batch = test_util::random_batch(&spec, 5, &device);
        let out = model.member_outputs(batch.obs.clone(), batch.action.clone());
        let (mean, log_std) = (host(out.delta_mean), host(out.delta_log_std));
        let d_n =
            host(normalizer.normalize_delta_tensor(batch.obs.clone(), batch.next_obs.clone()));
        let got = host(model.log_likelihood(&batch, 1));
        for b in 0..5 {
            let density: f64 = (0..3)
                .map(|m| {
                    let (mu, ls) = (f64::from(mean[m * 5 + b]), f64::from(log_std[m * 5 + b]));
                    let z = (f64::from(d_n[b]) - mu) / ls.exp();
                    (-0.5 * z * z - ls - 0.5 * LN_2PI).exp()
                })
                .sum::<f64>()
                / 3.0;
            let want = density.ln() - normalizer.log_delta_std_sum();
            assert!(
                (f64::from(got[b]) - want).abs() < 1e-4,
                "row {b}: {} vs {want}",
                got[b]
            );
        }
    }

    #[test]
    fn bootstrap_indices_differ_per_member_and_repeat_for_a_seed() {
        let (_rng, device) = test_util::seeded_device(4);
        let model = tiny(3, &spec_1d(), &device);
        device.seed(17);
        let first = host_int(model.bootstrap_indices(50, &device));
        device.seed(17);
        let again = host_int(model.bootstrap_indices(50, &device));
        assert_eq!(first, again, "same device seed, same resamples");
        assert!(first.iter().all(|i| (0..50).contains(i)), "{first:?}");
        let rows: Vec<&[i64]> = first.chunks(50).collect();
        assert!(
            rows[0] != rows[1] && rows[1] != rows[2] && rows[0] != rows[2],
            "members share a resample: {rows:?}"
        );
        // With replacement: some row repeats within a member (P(no repeat) = 50!/50^50).
        let mut sorted = rows[0].to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert!(sorted.len() < 50, "no repeated index in {:?}", rows[0]);
        device.seed(18);
        assert_ne!(host_int(model.bootstrap_indices(50, &device)), first);

        let plain = EnsembleConfig {
            members: 3,
            hidden: vec![4],
            bootstrap: false,
            ..Default::default()
        }
        .init(&spec_1d(), Normalizer::identity(1), &device);
        let identity: Vec<i64> = (0..3).flat_map(|_| 0..5).collect();
        assert_eq!(host_int(plain.bootstrap_indices(5, &device)), identity);
    }

    // Reference (python3): sp = lambda x: math.log1p(math.exp(x));
    // clamp = lambda r, lo, hi: lo + sp(hi - sp(hi - r) - lo)
    // clamp(0, -5, 0.25) = -0.5640252113713853, clamp(-3, ..) = -2.906502010409579,
    // clamp(2, ..) = 0.09591635835437273
    #[test]
    fn soft_log_std_bounds_match_the_pets_clamp_and_hold_for_extreme_inputs() {
        let device = wm_backend::test_device();
        let (lo, hi) = (-5.0f32, 0.25f32);
        let bound = |v: f32| Tensor::<3>::from_floats([[[v]]], &device);
        let raw = [-1e30f32, -1e4, -50.0, -3.0, 0.0, 2.0, 50.0, 1e4, 1e30];
        let got = host(pets_soft_clamp(
            Tensor::<3>::from_data(TensorData::new(raw.to_vec(), [1, 9, 1]), &device),
            bound(lo),
            bound(hi),
        ));
        for (g, w) in [
            (got[3], -2.906_502),
            (got[4], -0.564_025_2),
            (got[5], 0.095_916_36),
        ] {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
        let slack = (1.0 + (lo - hi).exp()).ln();
        for w in got.windows(2) {
            assert!(w[0] <= w[1], "not monotone: {got:?}");
        }
        for v in &got {
            assert!(
                v.is_finite() && lo <= *v && *v <= hi + slack,
                "outside [{lo}, {hi} + {slack}]: {got:?}"
            );
        }
        assert!(
            (got[0] - lo).abs() < 1e-4 && (got[8] - hi).abs() < 1e-2,
            "{got:?}"
        );

        // The model's log-stds stay inside its learned bounds far from any data.
        let (_rng, device) = test_util::seeded_device(5);
        let model = tiny(3, &spec_1d(), &device);
        let obs = Tensor::<2>::from_floats([[-1e3], [0.0], [1e3]], &device);
        let out = model.member_outputs(obs, Tensor::zeros([3, 1], &device));
        for v in host(out.delta_log_std) {
            assert!((-5.0..=0.25 + 0.01).contains(&v), "log-std {v}");
        }
    }

    #[test]
    fn config_validation_names_the_bad_field() {
        let bad = |c: EnsembleConfig| c.validate().unwrap_err().field;
        let d = EnsembleConfig::default();
        assert!(d.validate().is_ok());
        assert_eq!(
            bad(EnsembleConfig {
                members: 0,
                ..d.clone()
            }),
            "members"
        );
        assert_eq!(
            bad(EnsembleConfig {
                members: MAX_MEMBERS + 1,
                ..d.clone()
            }),
            "members"
        );
        assert_eq!(
            bad(EnsembleConfig {
                hidden: vec![0],
                ..d.clone()
            }),
            "hidden"
        );
        assert_eq!(
            bad(EnsembleConfig {
                bound_weight: f64::NAN,
                ..d.clone()
            }),
            "bound_weight"
        );
        assert_eq!(
            bad(EnsembleConfig {
                init_max_log_std: -6.0,
                ..d.clone()
            }),
            "init_max_log_std"
        );
        let parsed: EnsembleConfig = ron::from_str("(members: 3, propagation: Ts1)").unwrap();
        assert_eq!((parsed.members, parsed.propagation), (3, Propagation::Ts1));
        assert!(ron::from_str::<EnsembleConfig>("(member: 3)").is_err());
    }

    /// With log-stds clamped near e^-10 a sample is its member's mean: `sample_next_from` uses
    /// exactly the given member of each row, and `sample_next` under TS-1 uses several members.
    #[test]
    fn sampling_from_given_members_uses_those_members_and_ts1_mixes_them() {
        let (_rng, device) = test_util::seeded_device(6);
        let config = EnsembleConfig {
            members: 4,
            hidden: vec![16],
            propagation: Propagation::Ts1,
            init_min_log_std: -12.0,
            init_max_log_std: -10.0,
            ..Default::default()
        };
        let model = config.init(&spec_1d(), Normalizer::identity(1), &device);
        let n = 64;
        let obs = Tensor::<2>::random([n, 1], Distribution::Uniform(-1.0, 1.0), &device);
        let action = Tensor::<2>::random([n, 1], Distribution::Uniform(-1.0, 1.0), &device);
        let means = host(model.member_outputs(obs.clone(), action.clone()).delta_mean);
        let closest = |next: &[f32], start: &[f32]| -> Vec<usize> {
            (0..n)
                .map(|b| {
                    let delta = next[b] - start[b];
                    (0..4)
                        .min_by(|&i, &j| {
                            (means[i * n + b] - delta)
                                .abs()
                                .total_cmp(&(means[j * n + b] - delta).abs())
                        })
                        .unwrap()
                })
                .collect()
        };
        let start = host(obs.clone());
        let mut rng = test_util::rng(0);
        let wanted: Vec<i64> = (0..n).map(|_| rng.random_range(0..4)).collect();
        let members = Tensor::<1, Int>::from_data(TensorData::new(wanted.clone(), [n]), &device);
        let p = model.sample_next_from(obs.clone(), action.clone(), members);
        let used = closest(&host(p.next_obs), &start);
        assert_eq!(
            used.iter().map(|&u| u as i64).collect::<Vec<_>>(),
            wanted,
            "the sample of each row comes from its given member"
        );
        let mixed = closest(&host(model.sample_next(obs, action).next_obs), &start);
        let mut distinct = mixed.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            4,
            "TS-1 over 64 rows uses every member: {mixed:?}"
        );
    }

    /// After a few hundred updates on `s' = s + 0.5 sin(3 s)` with `s` in `[-1, 1]`, the
    /// members' means agree inside the data (spread below 0.05 in normalised units) and
    /// disagree far outside it (`s = ±6`): epistemic spread at least 5 times larger.
    #[test]
    fn members_agree_near_the_data_and_disagree_away_from_it() {
        let (_rng, device) = test_util::seeded_device(7);
        let training = device.clone().autodiff();
        let spec = spec_1d();
        let make = |rng: &mut test_util::TestRng, n: usize| {
            let mut hb = test_util::HostBatch {
                obs: vec![],
                action: vec![],
                next_obs: vec![],
                reward: vec![],
                n,
            };
            for _ in 0..n {
                let s: f32 = rng.random_range(-1.0..1.0);
                hb.obs.push(s);
                hb.action.push(rng.random_range(-1.0..1.0));
                hb.next_obs.push(s + 0.5 * (3.0 * s).sin());
                hb.reward.push(0.0);
            }
            hb
        };
        let mut rng = test_util::rng(1);
        let data = make(&mut rng, 2000);
        let normalizer = Normalizer::fit(&data.obs, &data.next_obs, &data.reward, 1);
        let model = EnsembleConfig {
            members: 5,
            hidden: vec![32, 32],
            ..Default::default()
        }
        .init(&spec, normalizer, &training);
        let model = test_util::train(
            model,
            400,
            3e-3,
            |rng| make(rng, 64).to_tensors(&spec, &training),
            &mut rng,
        )
        .valid();
        let spread = |s: &[f32]| -> f64 {
            let n = s.len();
            let obs = Tensor::<2>::from_data(TensorData::new(s.to_vec(), [n, 1]), &device);
            let means = to_vec2(
                model
                    .member_outputs(obs, Tensor::zeros([n, 1], &device))
                    .delta_mean
                    .reshape([5, n]),
            );
            (0..n)
                .map(|b| {
                    let v: Vec<f64> = (0..5).map(|m| f64::from(means[m * n + b])).collect();
                    let mu = v.iter().sum::<f64>() / 5.0;
                    (v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / 5.0).sqrt()
                })
                .sum::<f64>()
                / n as f64
        };
        let near = spread(&[-0.8, -0.4, 0.0, 0.4, 0.8]);
        let far = spread(&[-6.0, 6.0]);
        eprintln!("member spread: near the data {near:.4}, far from it {far:.4}");
        assert!(near < 0.05, "members disagree on the data: spread {near}");
        assert!(
            far > 5.0 * near,
            "no epistemic spread away from the data: far {far}, near {near}"
        );
    }
}
