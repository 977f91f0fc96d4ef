//! Diagonal Gaussian and Bernoulli densities on tensors, written with as few element-wise
//! operations as the maths allows (each `exp` is a full pass on the CPU backend).
//!
//! Conventions: a Gaussian is given by its mean and its **log** standard deviation; densities
//! are natural-log densities (nats); sums run over the last (feature) dimension and return one
//! value per row.

use burn::tensor::Tensor;
use burn::tensor::activation::{sigmoid, tanh};

/// `ln(2 pi)`.
pub const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// Element-wise log-density `ln N(x; mean, exp(log_std)^2)`.
///
/// # Shapes
/// - `x`, `mean`, `log_std`: `[B, N]`
/// - returns `[B, N]`
pub fn gaussian_log_prob(x: Tensor<2>, mean: Tensor<2>, log_std: Tensor<2>) -> Tensor<2> {
    assert_eq!(
        x.dims(),
        mean.dims(),
        "gaussian_log_prob: x shape {:?} != mean shape {:?}",
        x.dims(),
        mean.dims()
    );
    assert_eq!(
        x.dims(),
        log_std.dims(),
        "gaussian_log_prob: x shape {:?} != log_std shape {:?}",
        x.dims(),
        log_std.dims()
    );
    let z = (x - mean) * log_std.clone().neg().exp();
    z.square().mul_scalar(-0.5) - log_std.add_scalar(0.5 * LN_2PI)
}

/// Log-density of a diagonal Gaussian, summed over the feature dimension.
///
/// # Shapes
/// - `x`, `mean`, `log_std`: `[B, N]`
/// - returns `[B]`
pub fn gaussian_log_prob_sum(x: Tensor<2>, mean: Tensor<2>, log_std: Tensor<2>) -> Tensor<1> {
    let [b, _] = x.dims();
    gaussian_log_prob(x, mean, log_std).sum_dim(1).reshape([b])
}

/// Log-density of `x = mean + exp(log_std) * eps` under its own Gaussian, given `eps`: the
/// cheap form `sum(-eps^2/2 - log_std) - N ln(2 pi)/2` used for reparameterised samples.
///
/// # Shapes
/// - `eps`, `log_std`: `[B, N]`
/// - returns `[B]`
pub fn gaussian_log_prob_of_noise(eps: Tensor<2>, log_std: Tensor<2>) -> Tensor<1> {
    assert_eq!(
        eps.dims(),
        log_std.dims(),
        "gaussian_log_prob_of_noise: eps shape {:?} != log_std shape {:?}",
        eps.dims(),
        log_std.dims()
    );
    let [b, n] = eps.dims();
    (eps.square().mul_scalar(-0.5) - log_std)
        .sum_dim(1)
        .reshape([b])
        .sub_scalar(0.5 * LN_2PI * n as f64)
}

/// Analytic `KL(N(mean_q, exp(log_std_q)^2) || N(mean_p, exp(log_std_p)^2))`, summed over the
/// feature dimension:
/// `sum[ lp - lq + (exp(2 (lq - lp)) + (mq - mp)^2 exp(-2 lp)) / 2 - 1/2 ]`.
///
/// # Shapes
/// - all inputs: `[B, N]`
/// - returns `[B]`
pub fn kl_diag_gaussian(
    mean_q: Tensor<2>,
    log_std_q: Tensor<2>,
    mean_p: Tensor<2>,
    log_std_p: Tensor<2>,
) -> Tensor<1> {
    let dims = mean_q.dims();
    for (name, t) in [
        ("log_std_q", &log_std_q),
        ("mean_p", &mean_p),
        ("log_std_p", &log_std_p),
    ] {
        assert_eq!(
            t.dims(),
            dims,
            "kl_diag_gaussian: {name} shape {:?} != mean_q shape {dims:?}",
            t.dims()
        );
    }
    let log_ratio = log_std_q - log_std_p.clone(); // lq - lp
    let var_ratio = log_ratio.clone().mul_scalar(2.0).exp();
    let mahalanobis = (mean_q - mean_p).square() * log_std_p.mul_scalar(-2.0).exp();
    ((var_ratio + mahalanobis).mul_scalar(0.5) - log_ratio)
        .sum_dim(1)
        .reshape([dims[0]])
        .sub_scalar(0.5 * dims[1] as f64)
}

/// Analytic `KL(N(mean, exp(log_std)^2) || N(0, I))`, summed over the feature dimension:
/// `sum[(mean^2 + exp(2 log_std)) / 2 - log_std - 1/2]`.
///
/// # Shapes
/// - `mean`, `log_std`: `[B, N]`
/// - returns `[B]`
pub fn kl_standard_normal(mean: Tensor<2>, log_std: Tensor<2>) -> Tensor<1> {
    let dims = mean.dims();
    assert_eq!(
        log_std.dims(),
        dims,
        "kl_standard_normal: log_std shape {:?} != mean shape {dims:?}",
        log_std.dims()
    );
    ((mean.square() + log_std.clone().mul_scalar(2.0).exp()).mul_scalar(0.5) - log_std)
        .sum_dim(1)
        .reshape([dims[0]])
        .sub_scalar(0.5 * dims[1] as f64)
}

/// Softly bounds an unconstrained network output to a log standard deviation in
/// `[min_log_std, max_log_std]` by tanh rescaling:
/// `log_std = mid + half * tanh(raw + offset)`, `mid = (min + max)/2`, `half = (max - min)/2`,
/// with `offset = atanh(-mid/half)` chosen so that `raw = 0` gives `log_std = 0` (unit standard
/// deviation) whenever `0` lies inside the bounds. The map is smooth, strictly increasing and
/// never leaves the interval, even for infinite `raw`. One transcendental function per element
/// (the `softplus`-based soft clamp needs two).
///
/// # Shapes
/// - `raw`: any shape; returns the same shape.
pub fn soft_bound_log_std<const D: usize>(
    raw: Tensor<D>,
    min_log_std: f64,
    max_log_std: f64,
) -> Tensor<D> {
    assert!(
        min_log_std < max_log_std,
        "soft_bound_log_std: min_log_std {min_log_std} must be below max_log_std {max_log_std}"
    );
    let mid = 0.5 * (min_log_std + max_log_std);
    let half = 0.5 * (max_log_std - min_log_std);
    // Clamp the target slightly inside (-1, 1) so the offset is finite.
    let offset = (-mid / half).clamp(-0.999, 0.999).atanh();
    tanh(raw.add_scalar(offset))
        .mul_scalar(half)
        .add_scalar(mid)
}

/// Binary cross-entropy of Bernoulli logits against targets in `[0, 1]`, in the numerically
/// stable form `max(x, 0) - x y + ln(1 + exp(-|x|))` (no overflow for any finite logit).
///
/// # Shapes
/// - `logits`, `targets`: `[B]`
/// - returns `[B]`
pub fn bce_with_logits(logits: Tensor<1>, targets: Tensor<1>) -> Tensor<1> {
    assert_eq!(
        logits.dims(),
        targets.dims(),
        "bce_with_logits: logits shape {:?} != targets shape {:?}",
        logits.dims(),
        targets.dims()
    );
    let softplus_neg_abs = logits.clone().abs().neg().exp().log1p();
    logits.clone().clamp_min(0.0) - logits * targets + softplus_neg_abs
}

/// Probability of a Bernoulli logit, `sigmoid(logit)`.
///
/// # Shapes
/// - `logits`: `[B]`; returns `[B]`
pub fn bernoulli_prob(logits: Tensor<1>) -> Tensor<1> {
    sigmoid(logits)
}

/// `ln sum_i exp(x_i)` along dimension 0, stabilised by subtracting the (detached) maximum.
///
/// # Shapes
/// - `x`: `[K, B]`
/// - returns `[B]`
pub fn logsumexp_dim0(x: Tensor<2>) -> Tensor<1> {
    let [_, b] = x.dims();
    let max = x.clone().detach().max_dim(0); // [1, B]
    ((x - max.clone()).exp().sum_dim(0).log() + max).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util;
    use burn::tensor::{Device, Distribution, TensorData};

    fn t2(rows: &[[f32; 3]], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 3]), device)
    }

    fn vec1(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f64], tol: f64, what: &str) {
        assert_eq!(
            actual.len(),
            expected.len(),
            "{what}: lengths {actual:?} vs {expected:?}"
        );
        for (a, e) in actual.iter().zip(expected) {
            assert!(
                (*a as f64 - e).abs() <= tol * e.abs().max(1.0),
                "{what}: got {actual:?}, expected {expected:?}"
            );
        }
    }

    // Golden values from scripts/references/gaussian_refs.py (python3, `math` only):
    //
    // ```python
    // LOG_2PI = math.log(2.0 * math.pi)
    // def log_density(x, mean, log_std):
    //     total = 0.0
    //     for xi, mi, li in zip(x, mean, log_std):
    //         z = (xi - mi) / math.exp(li)
    //         total += -0.5 * z * z - li - 0.5 * LOG_2PI
    //     return total
    // def kl(mq, lq, mp, lp):
    //     total = 0.0
    //     for a, la, b, lb in zip(mq, lq, mp, lp):
    //         va, vb = math.exp(2 * la), math.exp(2 * lb)
    //         total += lb - la + (va + (a - b) ** 2) / (2 * vb) - 0.5
    //     return total
    // X = [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [3.0, -2.5, 0.1]]
    // MEAN = [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.2]]
    // LOG_STD = [[0.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1.2, -0.3, -4.0]]
    // MQ = [[0.3, -0.7, 1.5], [0.0, 0.0, 0.0], [2.0, -1.0, 0.0]]
    // LQ = [[-0.5, 0.2, -2.0], [0.0, 0.0, 0.0], [-3.0, 1.0, 0.4]]
    // MP = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 0.0]]
    // LP = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, -1.0, 0.4]]
    // ```
    // Output:
    //   log_density: [-6.260283369665064, -2.756815599614018, -26.44782681352983]
    //   kl: [3.154009888850723, 0.0, 37.76767655412336]
    const X: [[f32; 3]; 3] = [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [3.0, -2.5, 0.1]];
    const MEAN: [[f32; 3]; 3] = [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.2]];
    const LOG_STD: [[f32; 3]; 3] = [[0.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1.2, -0.3, -4.0]];
    const MQ: [[f32; 3]; 3] = [[0.3, -0.7, 1.5], [0.0, 0.0, 0.0], [2.0, -1.0, 0.0]];
    const LQ: [[f32; 3]; 3] = [[-0.5, 0.2, -2.0], [0.0, 0.0, 0.0], [-3.0, 1.0, 0.4]];
    const MP: [[f32; 3]; 3] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 0.0]];
    const LP: [[f32; 3]; 3] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, -1.0, 0.4]];
    const GOLDEN_LOG_DENSITY: [f64; 3] =
        [-6.260283369665064, -2.756815599614018, -26.44782681352983];
    const GOLDEN_KL: [f64; 3] = [3.154009888850723, 0.0, 37.76767655412336];

    #[test]
    fn gaussian_log_density_matches_python_golden_values() {
        let d = wm_backend::test_device();
        let lp = gaussian_log_prob_sum(t2(&X, &d), t2(&MEAN, &d), t2(&LOG_STD, &d));
        assert_eq!(lp.dims(), [3], "actual shape {:?}", lp.dims());
        assert_close(&vec1(lp), &GOLDEN_LOG_DENSITY, 1e-5, "log density");
    }

    #[test]
    fn diagonal_gaussian_kl_matches_python_golden_values() {
        let d = wm_backend::test_device();
        let kl = kl_diag_gaussian(t2(&MQ, &d), t2(&LQ, &d), t2(&MP, &d), t2(&LP, &d));
        assert_close(&vec1(kl), &GOLDEN_KL, 1e-5, "kl");
        // The standard-normal special case agrees with the general formula on the rows whose
        // prior is N(0, I).
        let kl0 = vec1(kl_standard_normal(t2(&MQ, &d), t2(&LQ, &d)));
        assert_close(&kl0[..2], &GOLDEN_KL[..2], 1e-5, "kl against N(0, I)");
    }

    #[test]
    fn log_density_of_noise_equals_log_density_of_the_sample() {
        let (_rng, d) = test_util::seeded_device(3);
        let mean = Tensor::<2>::random([64, 5], Distribution::Normal(0.0, 1.0), &d);
        let log_std = Tensor::<2>::random([64, 5], Distribution::Uniform(-2.0, 1.0), &d);
        let eps = Tensor::<2>::random([64, 5], Distribution::Normal(0.0, 1.0), &d);
        let x = mean.clone() + log_std.clone().exp() * eps.clone();
        let a = vec1(gaussian_log_prob_sum(x, mean, log_std.clone()));
        let b = vec1(gaussian_log_prob_of_noise(eps, log_std));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-3, "{x} vs {y}");
        }
    }

    /// KL(q||p) = E_q[ln q(z) - ln p(z)]: the analytic value lies within 4 Monte-Carlo standard
    /// errors of the sample mean over 200k draws.
    #[test]
    fn analytic_kl_agrees_with_a_monte_carlo_estimate() {
        let (_rng, d) = test_util::seeded_device(11);
        let n = 200_000;
        let row = |v: [f32; 3]| {
            Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, 3]), &d).repeat_dim(0, n)
        };
        let (mq, lq, mp, lp) = (row(MQ[0]), row(LQ[0]), row(MP[2]), row(LP[2]));
        let eps = Tensor::<2>::random([n, 3], Distribution::Normal(0.0, 1.0), &d);
        let z = mq.clone() + lq.clone().exp() * eps.clone();
        let log_ratio = gaussian_log_prob_of_noise(eps, lq.clone())
            - gaussian_log_prob_sum(z, mp.clone(), lp.clone());
        let samples: Vec<f64> = vec1(log_ratio).into_iter().map(f64::from).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let stderr = (var / n as f64).sqrt();
        let analytic = vec1(kl_diag_gaussian(
            mq.slice(0..1),
            lq.slice(0..1),
            mp.slice(0..1),
            lp.slice(0..1),
        ))[0] as f64;
        assert!(
            (mean - analytic).abs() < 4.0 * stderr + 1e-4,
            "Monte-Carlo KL {mean} +- {stderr} vs analytic {analytic}"
        );
    }

    #[test]
    fn soft_log_std_bound_stays_within_bounds_for_extreme_inputs() {
        let d = wm_backend::test_device();
        let raw =
            Tensor::<1>::from_floats([-1e30, -1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4, 1e30], &d);
        let (lo, hi) = (-5.0, 2.0);
        let out = vec1(soft_bound_log_std(raw, lo, hi));
        for w in out.windows(2) {
            assert!(w[0] <= w[1], "not monotone: {out:?}");
        }
        for v in &out {
            assert!(
                v.is_finite() && (lo as f32) <= *v && *v <= hi as f32,
                "out of [{lo}, {hi}]: {out:?}"
            );
        }
        assert!(
            (out[0] - lo as f32).abs() < 1e-4 && (out[8] - hi as f32).abs() < 1e-4,
            "{out:?}"
        );
        assert!(
            out[4].abs() < 1e-5,
            "raw 0 should give log_std 0, got {}",
            out[4]
        );
    }

    #[test]
    fn bce_with_logits_is_stable_and_matches_the_naive_form() {
        let d = wm_backend::test_device();
        let logits = [-100.0f32, -3.0, 0.0, 2.5, 100.0];
        let targets = [0.0f32, 1.0, 1.0, 0.0, 1.0];
        let got = vec1(bce_with_logits(
            Tensor::from_floats(logits, &d),
            Tensor::from_floats(targets, &d),
        ));
        for ((x, y), g) in logits.iter().zip(targets).zip(&got) {
            let (x, y) = (*x as f64, y as f64);
            // Stable reference in f64: softplus(x) - x y.
            let expected = x.max(0.0) + (-x.abs()).exp().ln_1p() - x * y;
            assert!(
                ((*g as f64) - expected).abs() < 1e-5 * expected.max(1.0),
                "bce({x}, {y}) = {g}, expected {expected}"
            );
        }
    }

    #[test]
    fn logsumexp_is_stable_for_large_values() {
        let d = wm_backend::test_device();
        let x = Tensor::<2>::from_floats([[1000.0, -1000.0], [1000.0, -1001.0]], &d);
        let got = vec1(logsumexp_dim0(x));
        let expected = [1000.0 + 2f64.ln(), -1000.0 + (1.0 + (-1.0f64).exp()).ln()];
        assert!(
            (got[0] as f64 - expected[0]).abs() < 1e-3
                && (got[1] as f64 - expected[1]).abs() < 1e-3,
            "{got:?} vs {expected:?}"
        );
    }
}
