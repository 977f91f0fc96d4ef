//! Training, evaluation, checkpoints and TensorBoard logging for worldmodel's transition models.
//!
//! The pieces, in the order a run uses them: [`config`] (parse, override, validate), [`run`]
//! (the run folder), [`data`] (collect episodes, make tensors), [`trainer`] (the loop),
//! [`grad`] (global-norm clipping), [`eval`] (held-out metrics, one protocol for every model;
//! [`eval_model`] holds what differs per model class, [`metrics`] the arithmetic), [`checkpoint`] (atomic,
//! checksummed), [`tensorboard`] (event files), [`plot`] (imagined against real trajectories).

pub mod acting;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod eval_model;
pub mod limiter;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod plot;
pub mod run;
pub mod solve;
pub mod tensorboard;
pub mod trainer;

pub use config::TrainConfig;
/// Global gradient-norm clipping (lives with the models, which all use it).
pub use wm_models::grad;
pub use model::{AnyModel, ModelConfig};
pub use trainer::{TrainError, TrainOptions, TrainOutcome, load_for_eval, resume, train, update_step};
