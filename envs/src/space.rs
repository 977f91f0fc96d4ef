//! Observation and action spaces, and the action type passed to [`Env::step`](crate::Env::step).

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A set of valid observations or actions, in the manner of `gymnasium.spaces`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Space {
    /// A box of `f32` vectors: element `i` lies in `[low[i], high[i]]` (bounds may be infinite).
    /// `low` and `high` have the same length.
    Box {
        /// Lower bound of each element.
        low: Vec<f32>,
        /// Upper bound of each element.
        high: Vec<f32>,
    },
    /// The integers `0..n`.
    Discrete {
        /// Number of choices.
        n: usize,
    },
}

impl Space {
    /// Number of `f32` values one element of the space takes in a flat buffer:
    /// the box's length, or 1 for a discrete space (stored as the index, see [`Action::to_f32_vec`]).
    pub fn width(&self) -> usize {
        match self {
            Space::Box { low, .. } => low.len(),
            Space::Discrete { .. } => 1,
        }
    }

    /// Draws a random element as an [`Action`].
    ///
    /// Like Gymnasium's `Box.sample`: bounded elements are uniform in `[low, high]`, unbounded
    /// ones standard normal, and half-bounded ones a bound plus or minus an exponential(1) draw.
    /// A `Discrete { n: 0 }` space has no element; it yields `Discrete(0)`.
    pub fn sample(&self, rng: &mut impl Rng) -> Action {
        match self {
            Space::Discrete { n } => {
                Action::Discrete(if *n == 0 { 0 } else { rng.random_range(0..*n) })
            }
            Space::Box { low, high } => Action::Continuous(
                low.iter()
                    .zip(high)
                    .map(|(&low, &high)| sample_interval(rng, low, high))
                    .collect(),
            ),
        }
    }

    /// Whether `action` is an element of this space: same variant, same length, in range, not NaN.
    pub fn contains(&self, action: &Action) -> bool {
        match (self, action) {
            (Space::Discrete { n }, Action::Discrete(i)) => i < n,
            (Space::Box { low, high }, Action::Continuous(values)) => {
                values.len() == low.len()
                    && values
                        .iter()
                        .zip(low.iter().zip(high))
                        .all(|(&v, (&low, &high))| low <= v && v <= high)
            }
            _ => false,
        }
    }
}

/// One draw from `[low, high]` following Gymnasium's `Box.sample` rules for (un)bounded sides.
fn sample_interval(rng: &mut impl Rng, low: f32, high: f32) -> f32 {
    let exponential = |rng: &mut _| -> f64 { -(1.0 - Rng::random::<f64>(rng)).ln() };
    match (low.is_finite(), high.is_finite()) {
        (true, true) => {
            let (low, high) = (f64::from(low), f64::from(high));
            // Computed in f64, then kept inside the interval in case rounding to f32 left it
            // (min/max rather than clamp, which would panic on a malformed low > high).
            ((low + (high - low) * rng.random::<f64>()) as f32)
                .min(high as f32)
                .max(low as f32)
        }
        (true, false) => (f64::from(low) + exponential(rng)) as f32,
        (false, true) => (f64::from(high) - exponential(rng)) as f32,
        (false, false) => standard_normal(rng) as f32,
    }
}

/// Box–Muller transform: one standard normal draw from two uniforms.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // in (0, 1], so ln is finite
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl fmt::Display for Space {
    /// `Discrete(2)` or `Box(low=[-2.0], high=[2.0])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Space::Discrete { n } => write!(f, "Discrete({n})"),
            Space::Box { low, high } => write!(f, "Box(low={low:?}, high={high:?})"),
        }
    }
}

/// An action: an index into a [`Space::Discrete`], or a vector for a [`Space::Box`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Index of a discrete choice.
    Discrete(usize),
    /// A continuous action vector.
    Continuous(Vec<f32>),
}

impl Action {
    /// The action as a flat `f32` vector for model inputs and replay buffers:
    /// `Discrete(i)` becomes `[i as f32]`, `Continuous(v)` is `v`.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            Action::Discrete(index) => vec![*index as f32],
            Action::Continuous(values) => values.clone(),
        }
    }
}

impl fmt::Display for Action {
    /// `Discrete(3)` or `Continuous([0.5, -1.0])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Discrete(index) => write!(f, "Discrete({index})"),
            Action::Continuous(values) => write!(f, "Continuous({values:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn width_is_box_length_or_one_for_discrete() {
        assert_eq!(Space::Discrete { n: 5 }.width(), 1);
        assert_eq!(
            Space::Box {
                low: vec![0.0; 3],
                high: vec![1.0; 3]
            }
            .width(),
            3
        );
    }

    #[test]
    fn samples_are_contained_in_bounded_spaces() {
        let mut rng = rng();
        let discrete = Space::Discrete { n: 3 };
        let boxed = Space::Box {
            low: vec![-2.0, 0.0],
            high: vec![2.0, 1e-3],
        };
        for _ in 0..1000 {
            assert!(discrete.contains(&discrete.sample(&mut rng)));
            assert!(boxed.contains(&boxed.sample(&mut rng)));
        }
    }

    #[test]
    fn unbounded_box_samples_are_finite_and_respect_the_finite_side() {
        let mut rng = rng();
        let space = Space::Box {
            low: vec![f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY],
            high: vec![f32::INFINITY, f32::INFINITY, -1.0],
        };
        for _ in 0..1000 {
            let Action::Continuous(v) = space.sample(&mut rng) else {
                panic!("box gives continuous")
            };
            assert!(v.iter().all(|x| x.is_finite()));
            assert!(v[1] >= 1.0 && v[2] <= -1.0);
        }
    }

    #[test]
    fn contains_rejects_wrong_variant_length_range_and_nan() {
        let boxed = Space::Box {
            low: vec![-1.0],
            high: vec![1.0],
        };
        assert!(boxed.contains(&Action::Continuous(vec![1.0])));
        assert!(!boxed.contains(&Action::Continuous(vec![1.5])));
        assert!(!boxed.contains(&Action::Continuous(vec![f32::NAN])));
        assert!(!boxed.contains(&Action::Continuous(vec![0.0, 0.0])));
        assert!(!boxed.contains(&Action::Discrete(0)));
        assert!(!Space::Discrete { n: 2 }.contains(&Action::Discrete(2)));
    }

    #[test]
    fn discrete_action_flattens_to_its_index() {
        assert_eq!(Action::Discrete(3).to_f32_vec(), vec![3.0]);
        assert_eq!(
            Action::Continuous(vec![0.5, -1.0]).to_f32_vec(),
            vec![0.5, -1.0]
        );
    }

    #[test]
    fn display_names_variant_and_values() {
        assert_eq!(Action::Discrete(3).to_string(), "Discrete(3)");
        assert_eq!(Space::Discrete { n: 2 }.to_string(), "Discrete(2)");
        assert_eq!(
            Space::Box {
                low: vec![-2.0],
                high: vec![2.0]
            }
            .to_string(),
            "Box(low=[-2.0], high=[2.0])"
        );
    }
}
