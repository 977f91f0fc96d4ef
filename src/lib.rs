//! # worldmodel
//!
//! Variational world models for model-based reinforcement learning, and the `wm` trainer.
//!
//! This crate is the facade over the workspace: it re-exports each part under a short name so
//! that examples, integration tests and users' own programs need one dependency.
//!
//! - [`envs`]: the `Env` trait and Gymnasium-exact CartPole-v1 and Pendulum-v1.
//! - [`replay`]: the episode replay buffer, persisted as an append-only checksummed log.
//! - [`models`]: the conditional VAE and the Gaussian and deterministic MLP baselines.
//! - [`rssm`]: the Dreamer-style recurrent state-space model.
//! - [`imagine`]: the `WorldModel` trait over both and the batched `ModelEnv` for planners.
//! - [`plan`]: model-predictive control (random shooting, CEM, MPPI) over any `WorldModel`,
//!   and the true dynamics as a `WorldModel` for testing planners.
//! - [`agent`]: a Dreamer-style actor-critic learned in imagination over any `WorldModel`.
//! - [`train`]: configs, the rollout/learner pipeline, evaluation, checkpoints, TensorBoard.
//! - [`backend`]: run-time device selection (flex CPU by default, libtorch with `tch`).
//!
//! See `ARCHITECTURE.md` for the code map and the invariants.

#![warn(missing_docs)]

pub use wm_agent as agent;
pub use wm_backend as backend;
pub use wm_envs as envs;
pub use wm_imagine as imagine;
pub use wm_models as models;
pub use wm_plan as plan;
pub use wm_replay as replay;
pub use wm_rssm as rssm;
pub use wm_train as train;
