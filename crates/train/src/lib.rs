//! Training, evaluation, checkpoints and TensorBoard logging for worldmodel's world models.

pub mod checkpoint;
pub mod config;
pub mod tensorboard;
