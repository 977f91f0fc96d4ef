//! Returns of imagined trajectories: lambda-returns, the discount weights of each step, and the
//! percentile return normaliser of DreamerV3.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// TD(lambda) returns of an imagined trajectory (DreamerV3's convention), computed backwards:
///
/// `R_H = v_H`, `R_t = r_t + gamma c_t ((1 - lambda) v_{t+1} + lambda R_{t+1})`,
///
/// where `r_t` and `c_t` are the reward and the continue probability of the step from state
/// `t` to state `t + 1`, and `v_t` the value of state `t`. `lambda = 1` gives the discounted
/// Monte-Carlo return bootstrapped at the horizon, `lambda = 0` the one-step TD target.
///
/// # Shapes
/// - `reward`, `cont`: `[B, H]`; `value`: `[B, H + 1]` (states `0..=H`)
/// - returns `[B, H]` (for states `0..H`)
///
/// # Panics
/// If the shapes disagree or `H = 0`.
pub fn lambda_returns(
    reward: Tensor<2>,
    cont: Tensor<2>,
    value: Tensor<2>,
    discount: f32,
    lambda: f32,
) -> Tensor<2> {
    let [b, h] = reward.dims();
    assert!(
        h > 0 && cont.dims() == [b, h] && value.dims() == [b, h + 1],
        "lambda_returns: reward {:?}, cont {:?}, value {:?}; expected [B, H], [B, H], [B, H + 1] with H > 0",
        reward.dims(),
        cont.dims(),
        value.dims()
    );
    let mut next = value.clone().narrow(1, h, 1);
    let mut out = Vec::with_capacity(h);
    for t in (0..h).rev() {
        let r = reward.clone().narrow(1, t, 1);
        let c = cont.clone().narrow(1, t, 1);
        let v = value.clone().narrow(1, t + 1, 1);
        next = r + c.mul_scalar(discount) * (v.mul_scalar(1.0 - lambda) + next.mul_scalar(lambda));
        out.push(next.clone());
    }
    out.reverse();
    Tensor::cat(out, 1)
}

/// The weight of each imagined state in the losses: the discounted probability that the
/// trajectory is still alive when it reaches the state, `w_0 = 1`,
/// `w_t = prod_{k < t} gamma c_k`.
///
/// # Shapes
/// - `cont`: `[B, H]`; returns `[B, H]`
pub fn discount_weights(cont: Tensor<2>, discount: f32) -> Tensor<2> {
    let [b, h] = cont.dims();
    let ones = Tensor::<2>::ones([b, 1], &cont.device());
    if h == 1 {
        return ones;
    }
    Tensor::cat(vec![ones, cont.narrow(1, 0, h - 1).mul_scalar(discount)], 1).cumprod(1)
}

/// The `q`-quantile of `values` with linear interpolation between order statistics (numpy's
/// default `method="linear"`). `None` for an empty slice or when a value is NaN.
pub fn quantile(values: &[f32], q: f32) -> Option<f32> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f32;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f32;
    Some(sorted[below] + fraction * (sorted[above] - sorted[below]))
}

/// DreamerV3's return normalisation: the advantage is divided by
/// `max(limit, P_high - P_low)`, where the percentiles of the lambda-returns are tracked by an
/// exponential moving average. Dividing by at least `limit` scales large returns down without
/// amplifying small ones (the noise of sparse rewards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnNormalizer {
    /// Lower percentile, as a fraction (DreamerV3: 0.05).
    pub low_quantile: f32,
    /// Upper percentile, as a fraction (0.95).
    pub high_quantile: f32,
    /// Decay of the moving averages (0.99).
    pub decay: f32,
    /// The smallest scale (1.0).
    pub limit: f32,
    /// Moving averages of the percentiles, `None` before the first batch.
    pub low: Option<f32>,
    /// See `low`.
    pub high: Option<f32>,
}

impl ReturnNormalizer {
    /// A normaliser with DreamerV3's settings and `decay`.
    pub fn new(decay: f32) -> Self {
        Self {
            low_quantile: 0.05,
            high_quantile: 0.95,
            decay,
            limit: 1.0,
            low: None,
            high: None,
        }
    }

    /// Folds the percentiles of a batch of returns into the moving averages (the first batch
    /// sets them). Batches with NaNs are ignored.
    pub fn update(&mut self, returns: &[f32]) {
        let (Some(low), Some(high)) = (
            quantile(returns, self.low_quantile),
            quantile(returns, self.high_quantile),
        ) else {
            return;
        };
        let ema = |old: Option<f32>, new: f32| {
            old.map_or(new, |old| self.decay * old + (1.0 - self.decay) * new)
        };
        self.low = Some(ema(self.low, low));
        self.high = Some(ema(self.high, high));
    }

    /// `max(limit, high - low)`; `limit` before the first update.
    pub fn scale(&self) -> f32 {
        match (self.low, self.high) {
            (Some(low), Some(high)) => (high - low).max(self.limit),
            _ => self.limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn t2(values: &[f32], shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), shape),
            &wm_backend::test_device(),
        )
    }

    fn host(x: Tensor<2>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().expect("f32")
    }

    #[test]
    fn lambda_returns_match_hand_computed_values() {
        // gamma = 0.9, lambda = 0.5, H = 3; rows: no termination, and a likely termination
        // after the second step. Worked by hand, backwards from R_3 = v_3:
        // row 0: r = [1, 2, 3], c = [1, 1, 1], v = [0.5, 1, 2, 4]
        //   R_2 = 3 + 0.9 * 1 * (0.5 * 4 + 0.5 * 4)        = 6.6
        //   R_1 = 2 + 0.9 * 1 * (0.5 * 2 + 0.5 * 6.6)      = 5.87
        //   R_0 = 1 + 0.9 * 1 * (0.5 * 1 + 0.5 * 5.87)     = 4.0915
        // row 1: r = [-1, 0, 1], c = [1, 0.2, 1], v = [0, 10, 10, 10]
        //   R_2 = 1 + 0.9 * (0.5 * 10 + 0.5 * 10)          = 10
        //   R_1 = 0 + 0.9 * 0.2 * (0.5 * 10 + 0.5 * 10)    = 1.8
        //   R_0 = -1 + 0.9 * 1 * (0.5 * 10 + 0.5 * 1.8)    = 4.31
        let reward = t2(&[1.0, 2.0, 3.0, -1.0, 0.0, 1.0], [2, 3]);
        let cont = t2(&[1.0, 1.0, 1.0, 1.0, 0.2, 1.0], [2, 3]);
        let value = t2(&[0.5, 1.0, 2.0, 4.0, 0.0, 10.0, 10.0, 10.0], [2, 4]);
        let r = host(lambda_returns(
            reward.clone(),
            cont.clone(),
            value.clone(),
            0.9,
            0.5,
        ));
        let expected = [4.0915, 5.87, 6.6, 4.31, 1.8, 10.0];
        for (got, want) in r.iter().zip(expected) {
            assert!(
                (got - want).abs() < 1e-5,
                "lambda returns {r:?}, expected {expected:?}"
            );
        }
        // lambda = 1: the discounted sum bootstrapped with v_3; lambda = 0: one-step targets.
        let mc = host(lambda_returns(
            reward.clone(),
            cont.clone(),
            value.clone(),
            0.9,
            1.0,
        ));
        let want_mc0 = 1.0 + 0.9 * (2.0 + 0.9 * (3.0 + 0.9 * 4.0));
        assert!((mc[0] - want_mc0).abs() < 1e-5, "{mc:?} vs {want_mc0}");
        let td = host(lambda_returns(reward, cont, value, 0.9, 0.0));
        let want_td = [
            1.0 + 0.9,
            2.0 + 0.9 * 2.0,
            3.0 + 0.9 * 4.0,
            -1.0 + 9.0,
            0.18 * 10.0,
            10.0,
        ];
        for (got, want) in td.iter().zip(want_td) {
            assert!(
                (got - want).abs() < 1e-5,
                "one-step targets {td:?}, expected {want_td:?}"
            );
        }
    }

    #[test]
    fn discount_weights_are_the_discounted_survival_before_each_state() {
        let w = host(discount_weights(t2(&[1.0, 0.5, 0.0, 1.0], [1, 4]), 0.9));
        let expected = [1.0, 0.9, 0.9 * 0.9 * 0.5, 0.0];
        for (got, want) in w.iter().zip(expected) {
            assert!(
                (got - want).abs() < 1e-6,
                "weights {w:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.quantile(np.arange(101), [0.05, 0.95]) == [5, 95];
        // numpy.quantile([3, 1, 2, 10], 0.5) == 2.5; numpy.quantile([3, 1, 2, 10], 0.95) == 8.95
        let hundred: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        assert_eq!(quantile(&hundred, 0.05), Some(5.0));
        assert_eq!(quantile(&hundred, 0.95), Some(95.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 10.0], 0.5), Some(2.5));
        assert!((quantile(&[3.0, 1.0, 2.0, 10.0], 0.95).unwrap() - 8.95).abs() < 1e-5);
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1.0, f32::NAN], 0.5), None);
    }

    #[test]
    fn return_normalizer_tracks_the_percentile_range_and_never_scales_below_the_limit() {
        let mut norm = ReturnNormalizer::new(0.5);
        assert_eq!(norm.scale(), 1.0);
        let wide: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        norm.update(&wide);
        assert_eq!(norm.scale(), 90.0);
        let shifted: Vec<f32> = (0..=100).map(|i| 2.0 * i as f32).collect();
        norm.update(&shifted); // P5 = 10, P95 = 190: averages (5 + 10) / 2, (95 + 190) / 2
        assert!((norm.scale() - (142.5 - 7.5)).abs() < 1e-4, "{norm:?}");
        let mut small = ReturnNormalizer::new(0.99);
        small.update(&[0.1, 0.2, 0.3]);
        assert_eq!(
            small.scale(),
            1.0,
            "a range below the limit is not amplified"
        );
    }
}
