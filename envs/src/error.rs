//! The one error type of this crate.

use crate::space::{Action, Space};

/// Everything that can go wrong when creating or stepping an environment.
///
/// Messages name the operation and the values involved, so that a CLI can print them as they are.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    /// The action does not belong to the environment's action space
    /// (wrong variant, wrong length, out of range for a discrete space, or NaN).
    #[error("action {action} is outside {space} for {env_id}")]
    InvalidAction {
        /// The environment id, e.g. `CartPole-v1`.
        env_id: String,
        /// The rejected action.
        action: Action,
        /// The environment's action space.
        space: Space,
    },
    /// `step` was called before the first `reset` (or `set_state`).
    #[error("step called on {env_id} before reset; call reset(seed) first")]
    NotReset {
        /// The environment id.
        env_id: String,
    },
    /// `step` was called after the episode had ended (terminated or truncated).
    #[error(
        "step called on {env_id} after the episode ended at step {elapsed_steps} \
         (terminated={terminated}, truncated={truncated}); call reset to start a new episode"
    )]
    EpisodeEnded {
        /// The environment id.
        env_id: String,
        /// Steps taken in the episode that ended.
        elapsed_steps: usize,
        /// Whether the episode ended in a terminal state.
        terminated: bool,
        /// Whether the episode was cut by the time limit.
        truncated: bool,
    },
    /// [`make`](crate::make) was given a name it does not know.
    #[error("unknown environment {name:?}; known names: {}", known.join(", "))]
    UnknownEnv {
        /// The name that was asked for.
        name: String,
        /// Accepted names (short names and Gymnasium ids).
        known: Vec<String>,
    },
    /// An observation of the wrong width was given to a transition sampler.
    #[error("observation of {got} values given to {env_id}, whose observations have {expected}")]
    InvalidObservation {
        /// The environment id.
        env_id: String,
        /// The width of the environment's observations.
        expected: usize,
        /// The width given.
        got: usize,
    },
    /// A parameter of a stochastic environment is out of range.
    #[error("{env_id}: parameter `{field}` {message}")]
    InvalidParameter {
        /// The environment id.
        env_id: String,
        /// The parameter's name, as in its params struct.
        field: &'static str,
        /// What is wrong, with the bad value.
        message: String,
    },
    /// The environment exists but cannot be used for this purpose.
    #[error("{env_id} cannot be used for {operation}: {reason}")]
    Unsupported {
        /// The environment id.
        env_id: String,
        /// What was asked for.
        operation: &'static str,
        /// Why it is not possible.
        reason: String,
    },
    /// An error reported by a wrapped third-party environment (the `gym-rs` adapter).
    #[error("{operation} failed for {env_id}: {message}")]
    Backend {
        /// The environment id.
        env_id: String,
        /// The operation that failed, e.g. `step`.
        operation: &'static str,
        /// The backend's own description.
        message: String,
    },
}
