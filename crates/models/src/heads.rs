//! Pieces shared by the three models: input encoding, output splitting, reward and termination
//! losses, loss assembly.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::dist::{LN_2PI, bernoulli_prob, soft_bound_log_std};
use crate::{ActionSpec, LossOutput, ModelSpec, Normalizer, Prediction, TransitionTensors};

/// Encodes raw actions: one-hot for discrete spaces, `[low, high] -> [-1, 1]` for continuous.
///
/// # Shapes
/// - `action`: `[B, 1]` (discrete index as f32) or `[B, act_dim]`
/// - returns `[B, A]`
pub(crate) fn encode_action(spec: &ActionSpec, action: Tensor<2>) -> Tensor<2> {
    let [b, w] = action.dims();
    assert_eq!(
        w,
        spec.raw_width(),
        "action shape {:?}, expected [B, {}] for {spec:?}",
        action.dims(),
        spec.raw_width()
    );
    match spec {
        ActionSpec::Discrete { n } => action.reshape([b]).one_hot::<2>(*n),
        ActionSpec::Continuous { .. } => {
            let device = action.device();
            let (scale, shift) = spec.unit_box_affine();
            action * row(scale, &device) + row(shift, &device)
        }
    }
}

pub(crate) fn row(values: Vec<f32>, device: &Device) -> Tensor<2> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [1, n]), device)
}

/// `[s_n, a_enc]`, the conditioning input of every network.
///
/// # Shapes
/// - `obs`: `[B, O]`, `action`: `[B, raw width]`; returns `[B, O + A]`
pub(crate) fn model_input(
    spec: &ModelSpec,
    normalizer: &Normalizer,
    obs: Tensor<2>,
    action: Tensor<2>,
) -> Tensor<2> {
    let [b, o] = obs.dims();
    assert_eq!(
        o,
        spec.obs_dim,
        "obs shape {:?}, expected [B, {}]",
        obs.dims(),
        spec.obs_dim
    );
    assert_eq!(
        action.dims()[0],
        b,
        "action shape {:?} does not match obs shape {:?}",
        action.dims(),
        obs.dims()
    );
    Tensor::cat(
        vec![
            normalizer.normalize_obs_tensor(obs),
            encode_action(&spec.action, action),
        ],
        1,
    )
}

/// Checks a batch against the spec, with the actual shapes in the message.
pub(crate) fn check_batch(spec: &ModelSpec, batch: &TransitionTensors) {
    let b = batch.batch_size();
    let (o, w) = (spec.obs_dim, spec.action.raw_width());
    let ok = batch.obs.dims() == [b, o]
        && batch.next_obs.dims() == [b, o]
        && batch.action.dims() == [b, w]
        && batch.reward.dims() == [b]
        && batch.terminated.dims() == [b];
    assert!(
        ok,
        "batch shapes obs {:?}, action {:?}, next_obs {:?}, reward {:?}, terminated {:?}; expected [B, {o}], [B, {w}], [B, {o}], [B], [B]",
        batch.obs.dims(),
        batch.action.dims(),
        batch.next_obs.dims(),
        batch.reward.dims(),
        batch.terminated.dims()
    );
}

/// The output head layout `[delta mean (O) | delta raw log-std (O, optional) | reward | logit]`.
pub(crate) struct Head {
    pub delta_mean: Tensor<2>,
    pub delta_log_std: Option<Tensor<2>>,
    pub reward_mean: Tensor<1>,
    pub term_logit: Tensor<1>,
}

/// Output width of a head for `obs_dim` with or without a log-std block.
pub(crate) fn head_width(obs_dim: usize, with_std: bool) -> usize {
    if with_std {
        2 * obs_dim + 2
    } else {
        obs_dim + 2
    }
}

/// Splits a head output; bounds the log-std softly to `[min, max]`.
///
/// # Shapes
/// - `out`: `[B, 2O + 2]` (with std) or `[B, O + 2]`
pub(crate) fn split_head(
    out: Tensor<2>,
    obs_dim: usize,
    log_std_bounds: Option<(f64, f64)>,
) -> Head {
    let [b, w] = out.dims();
    let with_std = log_std_bounds.is_some();
    assert_eq!(
        w,
        head_width(obs_dim, with_std),
        "head output shape {:?}, obs_dim {obs_dim}",
        out.dims()
    );
    let delta_mean = out.clone().narrow(1, 0, obs_dim);
    let delta_log_std = log_std_bounds
        .map(|(lo, hi)| soft_bound_log_std(out.clone().narrow(1, obs_dim, obs_dim), lo, hi));
    let k = if with_std { 2 * obs_dim } else { obs_dim };
    let reward_mean = out.clone().narrow(1, k, 1).reshape([b]);
    let term_logit = out.narrow(1, k + 1, 1).reshape([b]);
    Head {
        delta_mean,
        delta_log_std,
        reward_mean,
        term_logit,
    }
}

/// A scalar log-std parameter, shape `[1]`, initialised to raw 0 (log-std 0 after bounding).
pub(crate) fn scalar_param(device: &Device) -> Param<Tensor<1>> {
    Param::from_tensor(Tensor::zeros([1], device))
}

/// Per-row Gaussian negative log-likelihood of the normalised reward with a shared log-std.
///
/// # Shapes
/// - `reward_n`, `mean`: `[B]`, `log_std`: `[1]`; returns `[B]`
pub(crate) fn reward_nll(reward_n: Tensor<1>, mean: Tensor<1>, log_std: Tensor<1>) -> Tensor<1> {
    let z = (reward_n - mean) * log_std.clone().neg().exp();
    z.square().mul_scalar(0.5) + log_std.add_scalar(0.5 * LN_2PI)
}

/// Builds a [`Prediction`] from a normalised change and the reward/termination outputs.
pub(crate) fn prediction(
    normalizer: &Normalizer,
    obs: Tensor<2>,
    delta_n: Tensor<2>,
    reward_n: Tensor<1>,
    term_logit: Tensor<1>,
) -> Prediction {
    Prediction {
        next_obs: normalizer.next_obs_from_delta_tensor(obs, delta_n),
        reward: normalizer.denormalize_reward_tensor(reward_n),
        terminated_prob: bernoulli_prob(term_logit),
    }
}

/// Weighs the terms, checking that the names of `terms` and `weights` are the same set, and
/// reads the metrics back in one transfer.
pub(crate) fn assemble_loss(
    terms: Vec<(&str, Tensor<1>)>,
    weights: Vec<(&str, f64)>,
    metrics: Vec<(&str, Tensor<1>)>,
) -> LossOutput {
    let terms: BTreeMap<String, Tensor<1>> =
        terms.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let weights: BTreeMap<String, f64> = weights
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert!(
        terms.keys().eq(weights.keys()),
        "loss terms {:?} and weights {:?} must have the same names",
        terms.keys().collect::<Vec<_>>(),
        weights.keys().collect::<Vec<_>>()
    );
    let total = terms
        .iter()
        .map(|(k, t)| t.clone().mul_scalar(weights[k]))
        .reduce(|a, b| a + b)
        .expect("at least one loss term");
    LossOutput {
        total,
        terms,
        weights,
        metrics: read_metrics(metrics),
    }
}

/// Reads scalar (`[1]`) diagnostics back to the host in one transfer (one device sync for
/// all of them).
pub fn read_metrics(metrics: Vec<(&str, Tensor<1>)>) -> BTreeMap<String, f64> {
    if metrics.is_empty() {
        return BTreeMap::new();
    }
    let (names, values): (Vec<&str>, Vec<Tensor<1>>) = metrics
        .into_iter()
        .map(|(k, v)| (k, v.detach().without_autodiff()))
        .unzip();
    let values = Tensor::cat(values, 0)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 metrics");
    names
        .into_iter()
        .map(String::from)
        .zip(values.into_iter().map(f64::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discrete_actions_are_one_hot_encoded() {
        let device = wm_backend::test_device();
        let a = Tensor::<2>::from_floats([[2.0], [0.0], [1.0]], &device);
        let enc = encode_action(&ActionSpec::Discrete { n: 3 }, a);
        assert_eq!(enc.dims(), [3, 3], "actual shape {:?}", enc.dims());
        assert_eq!(
            enc.into_data().try_to_vec::<f32>().unwrap(),
            vec![0., 0., 1., 1., 0., 0., 0., 1., 0.]
        );
    }

    #[test]
    fn continuous_actions_are_rescaled_to_the_unit_box() {
        let device = wm_backend::test_device();
        let spec = ActionSpec::Continuous {
            low: vec![-2.0, 0.0, f32::NEG_INFINITY],
            high: vec![2.0, 10.0, f32::INFINITY],
        };
        let a = Tensor::<2>::from_floats(
            [[-2.0, 0.0, 7.0], [2.0, 10.0, -3.0], [1.0, 2.5, 0.0]],
            &device,
        );
        let enc = encode_action(&spec, a)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let expected = [-1.0, -1.0, 7.0, 1.0, 1.0, -3.0, 0.5, -0.5, 0.0];
        for (g, e) in enc.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{enc:?} vs {expected:?}");
        }
    }

    #[test]
    #[should_panic(expected = "action shape [3, 2]")]
    fn a_wrong_action_width_panics_with_the_actual_shape() {
        let device = wm_backend::test_device();
        let _ = encode_action(
            &ActionSpec::Discrete { n: 3 },
            Tensor::<2>::zeros([3, 2], &device),
        );
    }

    #[test]
    #[should_panic(expected = "must have the same names")]
    fn loss_assembly_rejects_a_term_without_a_weight() {
        let device = wm_backend::test_device();
        let one = || Tensor::<1>::ones([1], &device);
        let _ = assemble_loss(
            vec![("recon", one()), ("kl", one())],
            vec![("recon", 1.0), ("kll", 1.0)],
            vec![],
        );
    }
}
