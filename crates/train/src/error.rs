//! The error of a training or evaluation run.

use std::path::{Path, PathBuf};

/// Errors of a training or evaluation run; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad config.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Bad device.
    #[error(transparent)]
    Device(#[from] wm_backend::BackendError),
    /// Environment or collection failure.
    #[error(transparent)]
    Collect(#[from] crate::data::CollectError),
    /// Replay file failure.
    #[error(transparent)]
    Replay(#[from] wm_replay::ReplayError),
    /// Checkpoint failure.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// TensorBoard event file failure.
    #[error(transparent)]
    TensorBoard(#[from] crate::tensorboard::TensorBoardError),
    /// A file in the run folder.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The run folder's contents do not fit together.
    #[error("run {run}: {message}")]
    Run {
        /// The run folder.
        run: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A rollout worker failed; the run was stopped.
    #[error("rollout worker {worker} failed: {error}")]
    Worker {
        /// The worker's index.
        worker: usize,
        /// Its error or panic message.
        error: String,
    },
    /// Every worker stopped without a word (should not happen: workers report their errors).
    #[error("every rollout worker stopped without reporting an error")]
    WorkersGone,
    /// Ctrl-C: the run stopped at a safe point after saving its checkpoint.
    #[error("interrupted at update {update}; the checkpoint is saved: continue with `wm train --resume {}`", run.display())]
    Interrupted {
        /// The update reached.
        update: u64,
        /// The run folder.
        run: PathBuf,
    },
    /// The loss or the gradient norm was NaN or infinite at too many updates in a row; those
    /// updates were skipped, so the weights and the last checkpoint are the last good ones.
    #[error(
        "the loss diverged: {in_a_row} updates in a row up to update {update} had a non-finite loss or gradient norm \
         (last: {terms}); they were skipped and the last good checkpoint is kept. Lower optim.lr or optim.grad_clip, \
         or raise schedule.max_nonfinite_in_a_row"
    )]
    Diverged {
        /// The last update attempted.
        update: u64,
        /// Skipped updates in a row.
        in_a_row: usize,
        /// The loss terms and gradient norm of the last one.
        terms: String,
    },
    /// The weights became non-finite although every applied update was finite; nothing was
    /// written.
    #[error(
        "the model's weights are not finite at update {update}; the checkpoint was not written (the last good one is kept)"
    )]
    NonFiniteWeights {
        /// The update.
        update: u64,
    },
}

pub(crate) fn io_error<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    }
}
