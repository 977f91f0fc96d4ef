//! Training, evaluation, checkpoints and TensorBoard logging for worldmodel's transition models.
//!
//! The pieces, in the order a run uses them: [`config`] (parse, override, validate), [`model`]
//! (the models and [`TrainableModel`], the one interface the trainer sees), [`run`] (the run
//! folder), [`data`] (collect episodes, make tensors), [`trainer`] (the loop), [`update`] (the
//! update and the non-finite guard), [`state`] (the learner and its checkpoint), [`grad`]
//! (global-norm clipping), [`eval`] (held-out metrics, one protocol for every model; [`eval_model`] holds what differs per model class, [`metrics`] the arithmetic), [`checkpoint`] (one atomic,
//! checksummed file), [`scores`] (sample-based scores for stochastic dynamics: energy score,
//! MMD, mode coverage, the NLL floor), [`logging`] and [`tensorboard`] (event files), [`plot`] (imagined
//! against real trajectories), [`export`] (weights as safetensors), [`play`] (a finished run's acting policy on the real
//! environment) and [`render`] (its episodes as ASCII or PNG frames), [`error`].

#![warn(missing_docs)]

pub mod acting;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod eval_model;
pub mod export;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod play;
pub mod plot;
pub mod render;
pub mod run;
pub mod scores;
pub mod solve;
pub mod state;
pub mod tensorboard;
pub mod trainer;
pub mod update;
pub mod world_model;

pub use config::TrainConfig;
pub use error::TrainError;
pub use model::{AnyModel, Batch, BatchKind, ModelConfig, TrainableModel};
pub use trainer::{TrainOptions, TrainOutcome, load_for_eval, resume, train};
pub use update::{StepOutcome, update_step};
/// Global gradient-norm clipping (lives with the models, which all use it).
pub use wm_models::grad;
