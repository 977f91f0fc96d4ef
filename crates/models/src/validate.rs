//! The one validation style of every config in the workspace: a `validate(&self)` method that
//! returns the first field out of range as an [`InvalidField`] (its dotted path relative to the
//! config, and what is wrong with the value), and the checks they share.
//!
//! The trainer prefixes the path (`model.latent_dim`) and adds the file and line. Sizes have an
//! upper bound as well as a lower one, so that a mistyped huge value is an error rather than
//! an allocation that takes the machine down.

/// The largest layer width, latent width or count a config may ask for.
pub const MAX_WIDTH: usize = 1 << 16;

/// A config value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {message}")]
pub struct InvalidField {
    /// Dotted path of the field, relative to the config that reported it (`latent_dim`).
    pub field: String,
    /// What is wrong, with the bad value.
    pub message: String,
}

impl InvalidField {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with `prefix.` in front of the field's path.
    pub fn within(self, prefix: &str) -> Self {
        Self {
            field: format!("{prefix}.{}", self.field),
            message: self.message,
        }
    }
}

/// `value` must be a count in `1..=max`.
pub fn count(field: &str, value: usize, max: usize) -> Result<(), InvalidField> {
    if value == 0 || value > max {
        return Err(InvalidField::new(
            field,
            format!("must be between 1 and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// Every width in `widths` must be in `1..=MAX_WIDTH` (an empty list is allowed).
pub fn widths(field: &str, widths: &[usize]) -> Result<(), InvalidField> {
    if widths.len() > 64 || widths.iter().any(|&w| w == 0 || w > MAX_WIDTH) {
        return Err(InvalidField::new(
            field,
            format!("must list at most 64 widths, each between 1 and {MAX_WIDTH}, got {widths:?}"),
        ));
    }
    Ok(())
}

/// `value` must be finite and `>= 0`.
pub fn non_negative(field: &str, value: f64) -> Result<(), InvalidField> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(InvalidField::new(
            field,
            format!("must be a finite number >= 0, got {value}"),
        ));
    }
    Ok(())
}

/// `value` must be finite and `> 0`.
pub fn positive(field: &str, value: f64) -> Result<(), InvalidField> {
    if !(value.is_finite() && value > 0.0) {
        return Err(InvalidField::new(
            field,
            format!("must be a positive number, got {value}"),
        ));
    }
    Ok(())
}

/// `value` must be finite and within `[low, high]`.
pub fn within(field: &str, value: f64, low: f64, high: f64) -> Result<(), InvalidField> {
    if !(value.is_finite() && value >= low && value <= high) {
        return Err(InvalidField::new(
            field,
            format!("must be in [{low}, {high}], got {value}"),
        ));
    }
    Ok(())
}

/// A log-std bound pair: both finite, in [-20, 20], `min < max`.
pub fn log_std_bounds(min_field: &str, min: f64, max: f64) -> Result<(), InvalidField> {
    within(min_field, min, -20.0, 20.0)?;
    if !(max.is_finite() && (-20.0..=20.0).contains(&max) && min < max) {
        return Err(InvalidField::new(
            min_field.replace("min", "max"),
            format!("must be finite, in [-20, 20] and above {min_field} ({min}), got {max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_reject_zero_nan_negative_and_huge_values_with_the_field_name() {
        assert_eq!(
            count("n", 0, 10).unwrap_err().to_string(),
            "field `n` must be between 1 and 10, got 0"
        );
        assert!(count("n", 11, 10).is_err() && count("n", 10, 10).is_ok());
        assert!(widths("hidden", &[8, 0]).is_err() && widths("hidden", &[MAX_WIDTH + 1]).is_err());
        assert!(widths("hidden", &[]).is_ok() && widths("hidden", &[8, 8]).is_ok());
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            assert!(non_negative("x", bad).is_err(), "{bad}");
            assert!(positive("x", bad).is_err(), "{bad}");
        }
        assert!(non_negative("x", 0.0).is_ok() && positive("x", 0.0).is_err());
        assert!(within("x", 1.5, 0.0, 1.0).is_err() && within("x", 1.0, 0.0, 1.0).is_ok());
        assert_eq!(
            log_std_bounds("min_log_std", 2.0, 2.0).unwrap_err().field,
            "max_log_std"
        );
        assert_eq!(InvalidField::new("a", "b").within("model").field, "model.a");
    }
}
