//! The arithmetic of the evaluation metrics, on the host in `f64`: RMSE by horizon and
//! dimension, termination accuracy and recall, mean squared errors and NLL per dimension. The
//! protocol that feeds them is in [`crate::eval`].

use crate::eval::HorizonEntry;

/// Squared errors of predicted observations, by horizon (1-based) and dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonErrors {
    obs_dim: usize,
    /// `squared[h][d]`.
    squared: Vec<Vec<f64>>,
    /// Predictions added at each horizon.
    counts: Vec<usize>,
}

impl HorizonErrors {
    /// No errors yet, for horizons `1..=max_horizon`.
    pub fn new(obs_dim: usize, max_horizon: usize) -> Self {
        Self {
            obs_dim,
            squared: vec![vec![0.0; obs_dim]; max_horizon + 1],
            counts: vec![0; max_horizon + 1],
        }
    }

    /// Adds one prediction at `horizon` (`1..=max_horizon`).
    ///
    /// # Panics
    /// If the horizon is out of range or a slice does not have `obs_dim` values.
    pub fn add(&mut self, horizon: usize, predicted: &[f32], truth: &[f32]) {
        assert!(
            (1..self.counts.len()).contains(&horizon)
                && predicted.len() == self.obs_dim
                && truth.len() == self.obs_dim,
            "horizon {horizon} (max {}), {} predicted and {} true values for obs_dim {}",
            self.counts.len() - 1,
            predicted.len(),
            truth.len(),
            self.obs_dim
        );
        for (sum, (p, t)) in self.squared[horizon]
            .iter_mut()
            .zip(predicted.iter().zip(truth))
        {
            let error = f64::from(*p) - f64::from(*t);
            *sum += error * error;
        }
        self.counts[horizon] += 1;
    }

    /// RMSE at `horizon`: over all dimensions (root of the mean over predictions and
    /// dimensions) and per dimension; `None` when nothing was added there.
    pub fn entry(&self, horizon: usize) -> Option<HorizonEntry> {
        let n = *self.counts.get(horizon)?;
        if n == 0 {
            return None;
        }
        let squared = &self.squared[horizon];
        Some(HorizonEntry {
            horizon,
            rmse: (squared.iter().sum::<f64>() / (n * self.obs_dim) as f64).sqrt(),
            rmse_per_dim: squared.iter().map(|s| (s / n as f64).sqrt()).collect(),
            windows: n,
        })
    }
}

/// Root of a running mean of squared errors.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeanSquare {
    sum: f64,
    n: usize,
}

impl MeanSquare {
    /// Adds the error `predicted - truth`.
    pub fn add(&mut self, predicted: f32, truth: f32) {
        let error = f64::from(predicted) - f64::from(truth);
        self.sum += error * error;
        self.n += 1;
    }

    /// `sqrt(mean squared error)`, NaN when nothing was added.
    pub fn rmse(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            (self.sum / self.n as f64).sqrt()
        }
    }
}

/// Termination predictions against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TerminationCounts {
    steps: usize,
    correct: usize,
    terminal: usize,
    terminal_hit: usize,
}

impl TerminationCounts {
    /// Adds one step: whether it really ended the episode by termination, and whether the model
    /// said so.
    pub fn add(&mut self, actual: bool, predicted: bool) {
        self.steps += 1;
        self.correct += usize::from(actual == predicted);
        self.terminal += usize::from(actual);
        self.terminal_hit += usize::from(actual && predicted);
    }

    /// Fraction of steps predicted right; NaN without steps.
    pub fn accuracy(&self) -> f64 {
        if self.steps == 0 {
            f64::NAN
        } else {
            self.correct as f64 / self.steps as f64
        }
    }

    /// Fraction of terminal steps predicted terminal; NaN without terminal steps.
    pub fn recall(&self) -> f64 {
        if self.terminal == 0 {
            f64::NAN
        } else {
            self.terminal_hit as f64 / self.terminal as f64
        }
    }
}

/// `-log_likelihood / (items * obs_dim)`: nats per dimension of a summed log-likelihood over
/// `items` observations; NaN when there are none.
pub fn nats_per_dim(log_likelihood: f64, items: usize, obs_dim: usize) -> f64 {
    if items == 0 || obs_dim == 0 {
        f64::NAN
    } else {
        -log_likelihood / (items * obs_dim) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmse_by_horizon_matches_hand_computed_values() {
        let mut errors = HorizonErrors::new(2, 3);
        // Horizon 1: errors (1, 2) and (3, 0): per dim sqrt(10/2), sqrt(4/2); overall sqrt(14/4).
        errors.add(1, &[1.0, 2.0], &[0.0, 0.0]);
        errors.add(1, &[0.0, 1.0], &[-3.0, 1.0]);
        // Horizon 3: one error (0.5, -0.5).
        errors.add(3, &[0.5, 0.0], &[0.0, 0.5]);
        let h1 = errors.entry(1).expect("horizon 1");
        assert_eq!((h1.horizon, h1.windows), (1, 2));
        assert!((h1.rmse - 3.5f64.sqrt()).abs() < 1e-12, "{h1:?}");
        assert!(
            (h1.rmse_per_dim[0] - 5f64.sqrt()).abs() < 1e-12
                && (h1.rmse_per_dim[1] - 2f64.sqrt()).abs() < 1e-12,
            "{h1:?}"
        );
        let h3 = errors.entry(3).expect("horizon 3");
        assert!((h3.rmse - 0.5).abs() < 1e-12 && h3.windows == 1, "{h3:?}");
        assert_eq!(errors.entry(2), None, "nothing at horizon 2");
        assert_eq!(errors.entry(4), None, "beyond the last horizon");
    }

    #[test]
    fn termination_accuracy_and_recall_match_hand_counts() {
        let mut counts = TerminationCounts::default();
        assert!(counts.accuracy().is_nan() && counts.recall().is_nan());
        // (actual, predicted): two right non-terminals, one false alarm, one hit, one miss.
        for (actual, predicted) in [
            (false, false),
            (false, false),
            (false, true),
            (true, true),
            (true, false),
        ] {
            counts.add(actual, predicted);
        }
        assert!((counts.accuracy() - 3.0 / 5.0).abs() < 1e-12);
        assert!((counts.recall() - 0.5).abs() < 1e-12);
        let mut none_terminal = TerminationCounts::default();
        none_terminal.add(false, false);
        assert!(none_terminal.recall().is_nan() && none_terminal.accuracy() == 1.0);
    }

    #[test]
    fn mean_square_and_nats_per_dim_match_hand_computed_values() {
        let mut ms = MeanSquare::default();
        assert!(ms.rmse().is_nan());
        ms.add(1.0, 0.0);
        ms.add(-1.0, 2.0);
        assert!((ms.rmse() - 5f64.sqrt()).abs() < 1e-12); // sqrt((1 + 9) / 2)
        // ln p summed over 4 observations of 3 dimensions: -(-6) / 12.
        assert!((nats_per_dim(-6.0, 4, 3) - 0.5).abs() < 1e-12);
        assert!(nats_per_dim(-6.0, 0, 3).is_nan());
    }
}
