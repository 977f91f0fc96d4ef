//! The critic's output distribution (DreamerV3): a categorical over `K` bins equally spaced in
//! symlog space, trained with two-hot targets. It learns values of any scale with the same
//! hyperparameters: Pendulum's returns are in the hundreds of negative units, CartPole's in
//! the tens.

use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Device, Int, Tensor};
use wm_rssm::{symexp, symlog};

/// `K` bins equally spaced in symlog space on `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TwoHot {
    /// The first bin, in symlog units.
    pub low: f32,
    /// The last bin, in symlog units.
    pub high: f32,
    /// Number of bins `K` (at least 2).
    pub bins: usize,
}

impl Default for TwoHot {
    /// DreamerV3's 255 bins on `[-20, 20]` (raw values up to about `±5e8`).
    fn default() -> Self {
        Self {
            low: -20.0,
            high: 20.0,
            bins: 255,
        }
    }
}

impl TwoHot {
    fn step(&self) -> f32 {
        (self.high - self.low) / (self.bins - 1) as f32
    }

    /// The bin centres in symlog units, `[1, K]`.
    pub fn centres(&self, device: &Device) -> Tensor<2> {
        Tensor::<1, Int>::arange(0..self.bins as i64, device)
            .float()
            .mul_scalar(self.step())
            .add_scalar(self.low)
            .reshape([1, self.bins])
    }

    /// Two-hot targets of raw values: `symlog(y)` clamped to the range is split between the two
    /// nearest bins, each weighted by its closeness (a triangular kernel of one bin's width,
    /// which for equal spacing is exactly the two-hot weights). Rows sum to 1.
    ///
    /// # Shapes
    /// - `y`: `[N]`; returns `[N, K]`
    pub fn encode(&self, y: Tensor<1>) -> Tensor<2> {
        let [n] = y.dims();
        let device = y.device();
        let y = symlog(y).clamp(self.low, self.high).reshape([n, 1]);
        relu(
            (y - self.centres(&device))
                .abs()
                .div_scalar(self.step())
                .neg()
                .add_scalar(1.0),
        )
    }

    /// The value a distribution stands for: `symexp(sum_k softmax(logits)_k centre_k)`.
    ///
    /// # Shapes
    /// - `logits`: `[N, K]`; returns `[N]`
    pub fn mean(&self, logits: Tensor<2>) -> Tensor<1> {
        let [n, k] = logits.dims();
        assert_eq!(
            k,
            self.bins,
            "twohot logits shape {:?}, expected [N, {}]",
            logits.dims(),
            self.bins
        );
        let device = logits.device();
        symexp(
            (softmax(logits, 1) * self.centres(&device))
                .sum_dim(1)
                .reshape([n]),
        )
    }

    /// Cross-entropy of the two-hot target of `target` under `logits`, per row.
    ///
    /// # Shapes
    /// - `logits`: `[N, K]`, `target`: `[N]`; returns `[N]`
    pub fn loss(&self, logits: Tensor<2>, target: Tensor<1>) -> Tensor<1> {
        let [n, _] = logits.dims();
        (self.encode(target.detach()) * log_softmax(logits, 1))
            .sum_dim(1)
            .reshape([n])
            .neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn host<const D: usize>(x: Tensor<D>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().expect("f32")
    }

    #[test]
    fn encode_splits_between_the_two_nearest_bins_and_rows_sum_to_one() {
        let device = wm_backend::test_device();
        // 5 bins at -2, -1, 0, 1, 2 (symlog units). symlog(e^0.25 - 1) = 0.25 sits a quarter of
        // the way from bin 2 to bin 3; symlog(-(e^1 - 1)) = -1 is bin 1 exactly; 1e9 clamps to 2.
        let two = TwoHot {
            low: -2.0,
            high: 2.0,
            bins: 5,
        };
        let y = [0.25f32.exp() - 1.0, -(1f32.exp() - 1.0), 1e9];
        let target = host(two.encode(Tensor::from_data(TensorData::new(y.to_vec(), [3]), &device)));
        let expected = [
            0.0, 0.0, 0.75, 0.25, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0,
        ];
        for (got, want) in target.iter().zip(expected) {
            assert!(
                (got - want).abs() < 1e-5,
                "two-hot {target:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn the_mean_of_the_target_distribution_recovers_the_value() {
        // Logits log(two-hot) put the softmax mass on the two bins, so the mean is the value.
        let device = wm_backend::test_device();
        let two = TwoHot::default();
        let values = [-300.0f32, -1.5, 0.0, 0.7, 42.0];
        let target = two.encode(Tensor::from_data(
            TensorData::new(values.to_vec(), [5]),
            &device,
        ));
        let logits = target.clamp_min(1e-30).log();
        let mean = host(two.mean(logits));
        for (got, want) in mean.iter().zip(values) {
            assert!(
                (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                "means {mean:?}, expected {values:?}"
            );
        }
    }

    #[test]
    fn the_loss_is_smallest_at_the_target_and_has_the_entropy_of_the_two_hot_there() {
        let device = wm_backend::test_device();
        let two = TwoHot {
            low: -2.0,
            high: 2.0,
            bins: 5,
        };
        let target =
            Tensor::<1>::from_data(TensorData::new(vec![0.25f32.exp() - 1.0], [1]), &device);
        let best = two.encode(target.clone()).clamp_min(1e-30).log();
        let at_best = host(two.loss(best, target.clone()))[0];
        // H(0.75, 0.25) = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335
        assert!((at_best - 0.562_335).abs() < 1e-4, "{at_best}");
        let flat = Tensor::<2>::zeros([1, 5], &device);
        let at_flat = host(two.loss(flat, target))[0];
        assert!(
            (at_flat - 5f32.ln()).abs() < 1e-5 && at_flat > at_best,
            "{at_flat} vs {at_best}"
        );
    }
}
