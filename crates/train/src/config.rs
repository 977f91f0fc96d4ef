//! Training configuration: parsed from RON, overridden from the command line, then validated.
//!
//! The flow follows ripgrep's `LowArgs -> HiArgs`: [`TrainConfig::load`] reads the file with
//! serde (unknown and missing fields are errors that carry the file, line and column), applies
//! `--set path.to.field=value` overrides, and [`TrainConfig::validate`] checks the values,
//! naming the field, the bad value and the line it was written on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};

/// An error in a configuration file or an override.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid RON for a training config (syntax, unknown or missing field, type).
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What RON or serde said.
        message: String,
    },
    /// A `--set` override names no field or gives a value of the wrong type.
    #[error("--set {assignment}: {message}")]
    Override {
        /// The override as given.
        assignment: String,
        /// What is wrong.
        message: String,
    },
    /// A field has a value outside its allowed range.
    #[error("{location}: field `{field}` {message}")]
    Invalid {
        /// `file:line` where the field was written, or `--set` when it came from an override.
        location: String,
        /// Dotted path of the field, e.g. `optim.lr`.
        field: String,
        /// What is wrong, with the bad value.
        message: String,
    },
}

/// Which policy the rollout workers act with (the prefill and the held-out episodes are always
/// random, so that every model is evaluated on the same kind of data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CollectPolicy {
    /// Uniformly random actions.
    Random,
    /// Model-predictive control over the newest published model: `Planner((kind: Cem))`.
    Planner(wm_plan::PlannerConfig),
    /// A Dreamer-style actor trained in imagination with its critic, beside the world model
    /// (one actor-critic update per world-model update): `Actor((horizon: 15))`. Workers
    /// sample its policy; evaluation episodes take its mode.
    Actor(wm_agent::ActorCriticConfig),
}

/// How much data to collect, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Environment steps collected with the random policy before the first update (whole
    /// episodes, so slightly more). After that the rollout workers collect at the replay ratio.
    pub prefill_steps: usize,
    /// Environment steps of held-out evaluation data, from episodes with other seeds.
    pub eval_steps: usize,
    /// The acting policy while collecting.
    pub policy: CollectPolicy,
    /// Capacity of the replay buffer in transitions.
    pub replay_capacity: usize,
}

/// The rollout/learner pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Rollout worker threads; 0 picks one per core left after the learner's (at least one).
    pub workers: usize,
    /// Gradient updates per environment step after prefill.
    pub replay_ratio: f64,
    /// Environment steps the collection may run ahead of, or behind, the ratio.
    pub tolerance_steps: usize,
    /// Episodes in flight between the workers and the learner.
    pub channel_capacity: usize,
    /// Publish the learner's weights to the workers every this many updates.
    pub weight_sync_every: usize,
    /// One worker in lock-step with the learner: the same seed gives the same numbers bit for bit.
    pub deterministic: bool,
}

impl PipelineConfig {
    /// The number of worker threads to start.
    pub fn resolved_workers(&self) -> usize {
        if self.deterministic {
            1
        } else if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
        } else {
            self.workers
        }
    }
}

/// Optimiser settings (Adam with global-norm gradient clipping).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Learning rate.
    pub lr: f64,
    /// Transitions per gradient update.
    pub batch_size: usize,
    /// Clip the global gradient norm to this value.
    pub grad_clip: f32,
    /// Adam's epsilon.
    pub eps: f32,
    /// Sequence length of the RSSM's batches (`batch_size` sequences of `seq_len` steps); the
    /// one-step models ignore it.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
}

fn default_seq_len() -> usize {
    50
}

/// When things happen, in gradient updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Total gradient updates.
    pub updates: usize,
    /// Write the loss terms to TensorBoard every this many updates.
    pub log_every: usize,
    /// Evaluate on held-out data every this many updates.
    pub eval_every: usize,
    /// Write a checkpoint every this many updates (and always at the end).
    pub checkpoint_every: usize,
    /// An update whose loss or gradient norm is NaN or infinite is skipped (the weights and the
    /// optimiser are left as they were) and counted in `train/nonfinite_updates`; this many
    /// in a row stop the run with an error, keeping the last good checkpoint. Default 10.
    #[serde(default = "default_max_nonfinite_in_a_row")]
    pub max_nonfinite_in_a_row: usize,
}

fn default_max_nonfinite_in_a_row() -> usize {
    10
}

/// What `wm eval` (and the periodic evaluation) measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Importance samples for the cVAE's IWAE bound (the final evaluation uses each).
    pub iwae_samples: Vec<usize>,
    /// Open-loop horizons for the RMSE.
    pub horizons: Vec<usize>,
    /// Held-out transitions used for the likelihood (the IWAE with many samples is costly).
    pub max_nll_transitions: usize,
    /// Importance samples used by the periodic evaluation during training (kept small).
    pub periodic_iwae_samples: usize,
    /// Episodes run with the acting policy (no exploration) at each periodic evaluation, logged
    /// as `eval/return` and `eval/episode_length` against environment steps; 0 turns them off.
    #[serde(default)]
    pub policy_episodes: usize,
    /// Run those policy-evaluation episodes every this many environment steps (checked after
    /// each update, so an evaluation comes at the first update past each multiple), apart from
    /// the held-out model evaluation; 0 (the default) runs them with the held-out evaluation,
    /// every `schedule.eval_every` updates. A fine curve of return against environment steps
    /// (every ~100 steps) costs only the episodes, not the model metrics. Unused when
    /// `policy_episodes` is 0.
    #[serde(default)]
    pub policy_every_env_steps: usize,
}

/// A whole training run's configuration: what `configs/*.ron` hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Environment: `cartpole` or `pendulum`.
    pub env: String,
    /// Seed of data collection, initialisation and sampling.
    pub seed: u64,
    /// The world model and its settings.
    pub model: ModelConfig,
    /// Data collection.
    pub data: DataConfig,
    /// Rollout workers, replay ratio and weight sync.
    pub pipeline: PipelineConfig,
    /// Optimiser.
    pub optim: OptimConfig,
    /// Schedules.
    pub schedule: ScheduleConfig,
    /// Evaluation.
    pub eval: EvalConfig,
}

impl TrainConfig {
    /// Reads `path`, applies the `--set` overrides in order, and validates the result.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line and field for every kind of bad input.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_ron_str(&text, path, overrides)
    }

    /// As [`load`](Self::load), from text already read; `path` is only used in messages.
    pub fn from_ron_str(
        text: &str,
        path: &Path,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        // `implicit_some` lets optional fields be written plainly (`horizon: 15`, not `Some(15)`).
        let options = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
        let config: TrainConfig = options.from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            line: error.position.line,
            column: error.position.col,
            message: error.code.to_string(),
        })?;
        let config = config.with_overrides(overrides)?;
        // Compared without enum variants (`data.policy.Planner.elites` is `data.policy.elites`),
        // as `validate` names fields.
        let without_variants = |path: &str| -> String {
            path.split('.')
                .filter(|key| !key.chars().next().is_some_and(char::is_uppercase))
                .collect::<Vec<_>>()
                .join(".")
        };
        let overridden: BTreeSet<String> = overrides
            .iter()
            .filter_map(|o| o.split_once('='))
            .map(|(k, _)| without_variants(k.trim()))
            .collect();
        config.validate().map_err(|invalid| {
            let location = if overridden.contains(&invalid.field) {
                "--set".to_string()
            } else {
                match locate_field(text, &invalid.field) {
                    Some(line) => format!("{}:{line}", path.display()),
                    None => path.display().to_string(),
                }
            };
            ConfigError::Invalid {
                location,
                field: invalid.field,
                message: invalid.message,
            }
        })?;
        Ok(config)
    }

    /// Applies `path.to.field=value` assignments. Values are read as JSON (`0.5`, `true`,
    /// `[1, 5]`, `"text"`), falling back to a bare string (`env=pendulum`). An enum's variant
    /// name may be left out of the path: `model.beta=0.5` reaches `model: Cvae((beta: ..))`.
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self, ConfigError> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut tree =
            serde_json::to_value(&self).expect("a config should always serialise to JSON");
        for assignment in overrides {
            let fail = |message: String| ConfigError::Override {
                assignment: assignment.clone(),
                message,
            };
            let (path, raw_value) = assignment
                .split_once('=')
                .ok_or_else(|| fail("expected `path.to.field=value`".into()))?;
            let value = serde_json::from_str(raw_value.trim())
                .unwrap_or_else(|_| serde_json::Value::String(raw_value.trim().to_string()));
            let slot = find_slot(&mut tree, path.trim()).map_err(fail)?;
            *slot = value;
        }
        serde_json::from_value(tree).map_err(|error| ConfigError::Override {
            assignment: overrides.join(" "),
            message: format!("the config no longer fits its schema: {error}"),
        })
    }

    /// Checks every value's range, every sub-config's included (model, latent, planner,
    /// actor-critic, pipeline, optimiser, schedule, evaluation); the first field out of range is
    /// returned with its dotted path (`model.latent_dim`, `data.policy.elites`; an enum's
    /// variant is left out of the path, as in `--set`).
    pub fn validate(&self) -> Result<(), InvalidField> {
        use wm_models::validate::{MAX_WIDTH, count, positive, within};
        if wm_envs::make(&self.env).is_err() {
            return Err(InvalidField::new(
                "env",
                format!(
                    "names no environment: `{}` (known: {})",
                    self.env,
                    wm_envs::ENV_NAMES.join(", ")
                ),
            ));
        }
        self.model
            .validate()
            .map_err(|invalid| invalid.within("model"))?;
        match &self.data.policy {
            CollectPolicy::Random => {}
            CollectPolicy::Planner(planner) => planner
                .validate()
                .map_err(|invalid| invalid.within("data.policy"))?,
            CollectPolicy::Actor(agent) => agent
                .validate()
                .map_err(|invalid| invalid.within("data.policy"))?,
        }
        // Upper bounds keep a mistyped huge value from becoming an allocation that takes the
        // machine down; "every" periods may be anything from 1 (huge = never).
        let counts = [
            ("data.prefill_steps", self.data.prefill_steps, 1 << 27),
            ("data.eval_steps", self.data.eval_steps, 1 << 24),
            ("data.replay_capacity", self.data.replay_capacity, 1 << 27),
            ("pipeline.workers", self.pipeline.workers.max(1), 256),
            (
                "pipeline.channel_capacity",
                self.pipeline.channel_capacity,
                MAX_WIDTH,
            ),
            (
                "pipeline.tolerance_steps",
                self.pipeline.tolerance_steps,
                1 << 30,
            ),
            (
                "pipeline.weight_sync_every",
                self.pipeline.weight_sync_every,
                usize::MAX,
            ),
            ("optim.batch_size", self.optim.batch_size, MAX_WIDTH),
            ("optim.seq_len", self.optim.seq_len, 10_000),
            ("schedule.updates", self.schedule.updates, usize::MAX),
            ("schedule.log_every", self.schedule.log_every, usize::MAX),
            ("schedule.eval_every", self.schedule.eval_every, usize::MAX),
            (
                "schedule.checkpoint_every",
                self.schedule.checkpoint_every,
                usize::MAX,
            ),
            (
                "schedule.max_nonfinite_in_a_row",
                self.schedule.max_nonfinite_in_a_row,
                usize::MAX,
            ),
            (
                "eval.max_nll_transitions",
                self.eval.max_nll_transitions,
                1 << 24,
            ),
            (
                "eval.periodic_iwae_samples",
                self.eval.periodic_iwae_samples,
                100_000,
            ),
        ];
        for (field, value, max) in counts {
            count(field, value, max)?;
        }
        if self.eval.policy_episodes > 10_000 {
            return Err(InvalidField::new(
                "eval.policy_episodes",
                format!("must be at most 10000, got {}", self.eval.policy_episodes),
            ));
        }
        positive("optim.lr", self.optim.lr)?;
        within("optim.lr", self.optim.lr, 0.0, 1.0)?;
        positive("optim.grad_clip", f64::from(self.optim.grad_clip))?;
        positive("optim.eps", f64::from(self.optim.eps))?;
        within("optim.eps", f64::from(self.optim.eps), 0.0, 1.0)?;
        if self.data.replay_capacity < self.data.prefill_steps {
            return Err(InvalidField::new(
                "data.replay_capacity",
                format!(
                    "({}) must hold the prefill (data.prefill_steps = {})",
                    self.data.replay_capacity, self.data.prefill_steps
                ),
            ));
        }
        if !(self.pipeline.replay_ratio.is_finite()
            && self.pipeline.replay_ratio > 0.0
            && self.pipeline.replay_ratio <= 1e6)
        {
            return Err(InvalidField::new(
                "pipeline.replay_ratio",
                format!(
                    "must be a positive number of updates per step, at most 1e6, got {}",
                    self.pipeline.replay_ratio
                ),
            ));
        }
        if self.eval.iwae_samples.is_empty()
            || self
                .eval
                .iwae_samples
                .iter()
                .any(|&k| k == 0 || k > 100_000)
        {
            return Err(InvalidField::new(
                "eval.iwae_samples",
                format!(
                    "must be a non-empty list of counts between 1 and 100000, got {:?}",
                    self.eval.iwae_samples
                ),
            ));
        }
        if self.eval.horizons.is_empty() || self.eval.horizons.iter().any(|&h| h == 0 || h > 1000) {
            return Err(InvalidField::new(
                "eval.horizons",
                format!(
                    "must be a non-empty list of horizons between 1 and 1000, got {:?}",
                    self.eval.horizons
                ),
            ));
        }
        Ok(())
    }

    /// The resolved config as pretty RON, as saved into the run folder.
    pub fn to_ron(&self) -> String {
        let pretty = ron::ser::PrettyConfig::new().struct_names(false);
        ron::ser::to_string_pretty(self, pretty).expect("a config should always serialise to RON")
    }
}

/// A value out of range: the dotted field path and what is wrong with it (the one type every
/// config's `validate` returns).
pub use wm_models::InvalidField;

/// Walks a dotted path through the JSON form of the config, stepping through an enum's variant
/// object (`{"Cvae": {...}}`) when the path does not name the variant.
fn find_slot<'a>(
    tree: &'a mut serde_json::Value,
    path: &str,
) -> Result<&'a mut serde_json::Value, String> {
    let mut node = tree;
    for key in path.split('.') {
        let object = node
            .as_object()
            .ok_or_else(|| format!("`{key}` is inside a value that has no fields"))?;
        // An externally tagged enum (`{"Cvae": {...}}`) is stepped through when its variant has the key.
        let variant = (!object.contains_key(key) && object.len() == 1)
            .then(|| object.iter().next().expect("one entry, checked above"))
            .filter(|(tag, inner)| {
                tag.chars().next().is_some_and(char::is_uppercase) && inner.get(key).is_some()
            })
            .map(|(tag, _)| tag.clone());
        if let Some(tag) = variant {
            node = node.get_mut(&tag).expect("checked above");
        } else if !object.contains_key(key) {
            let known: Vec<&str> = object.keys().map(String::as_str).collect();
            return Err(format!(
                "no field `{key}` here (fields: {})",
                known.join(", ")
            ));
        }
        node = node.get_mut(key).expect("checked above");
    }
    Ok(node)
}

/// 1-based line where the last component of a dotted field path is written (`name:`), searching
/// after the line of each parent in turn so that `optim.lr` is not confused with another `lr`.
fn locate_field(text: &str, dotted: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for key in dotted.split('.') {
        let pattern = format!("{key}:");
        let offset = lines[from..].iter().position(|line| {
            let trimmed = line.trim_start();
            trimmed.starts_with(&pattern)
                || trimmed.contains(&format!("({pattern}"))
                || trimmed.contains(&format!(" {pattern}"))
        })?;
        from += offset;
        found = Some(from + 1);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"(
    env: "cartpole",
    seed: 1,
    model: Gaussian(()),
    data: (prefill_steps: 1000, eval_steps: 200, policy: Random, replay_capacity: 10000),
    pipeline: (workers: 1, replay_ratio: 0.5, tolerance_steps: 100, channel_capacity: 8, weight_sync_every: 10, deterministic: false),
    optim: (
        lr: 0.001,
        batch_size: 64,
        grad_clip: 100.0,
        eps: 1e-8,
    ),
    schedule: (updates: 10, log_every: 5, eval_every: 5, checkpoint_every: 5),
    eval: (iwae_samples: [1, 64], horizons: [1, 5], max_nll_transitions: 100, periodic_iwae_samples: 8),
)"#;

    fn parse(text: &str, overrides: &[&str]) -> Result<TrainConfig, ConfigError> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        TrainConfig::from_ron_str(text, Path::new("configs/test.ron"), &overrides)
    }

    #[test]
    fn good_config_parses_and_round_trips_through_ron() {
        let config = parse(GOOD, &[]).expect("GOOD should parse");
        assert_eq!(config.optim.batch_size, 64);
        let again = parse(&config.to_ron(), &[]).expect("the saved RON should parse");
        assert_eq!(again, config);
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = GOOD.replace("eps: 1e-8,", "eps: 1e-8,\n        momentum: 0.9,");
        let message = parse(&text, &[]).unwrap_err().to_string();
        assert!(message.starts_with("configs/test.ron:12:"), "{message}");
        assert!(message.contains("momentum"), "{message}");
    }

    #[test]
    fn missing_field_is_named() {
        let text = GOOD.replace("grad_clip: 100.0,", "");
        let message = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            message.contains("grad_clip") && message.starts_with("configs/test.ron:"),
            "{message}"
        );
    }

    #[test]
    fn negative_learning_rate_names_field_value_and_line() {
        let text = GOOD.replace("lr: 0.001", "lr: -0.1");
        let message = parse(&text, &[]).unwrap_err().to_string();
        assert_eq!(
            message,
            "configs/test.ron:8: field `optim.lr` must be a positive number, got -0.1"
        );
    }

    #[test]
    fn zero_batch_is_rejected() {
        let message = parse(GOOD, &["optim.batch_size=0"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "--set: field `optim.batch_size` must be between 1 and 65536, got 0"
        );
    }

    #[test]
    fn overrides_reach_nested_fields_and_enum_contents() {
        let config = parse(
            GOOD,
            &["optim.lr=0.01", "env=pendulum", "eval.horizons=[1, 10]"],
        )
        .expect("valid overrides");
        assert_eq!(
            (
                config.optim.lr,
                config.env.as_str(),
                config.eval.horizons.clone()
            ),
            (0.01, "pendulum", vec![1, 10])
        );
    }

    #[test]
    fn override_of_unknown_field_lists_the_known_ones() {
        let message = parse(GOOD, &["optim.learning_rate=1"])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("no field `learning_rate`") && message.contains("batch_size"),
            "{message}"
        );
    }

    #[test]
    fn unknown_environment_is_rejected() {
        let message = parse(GOOD, &["env=acrobot"]).unwrap_err().to_string();
        assert!(
            message.contains("`env`") && message.contains("acrobot"),
            "{message}"
        );
    }
}
