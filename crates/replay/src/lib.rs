//! `wm-replay`: the replay buffer of the world-model trainer.
//!
//! * [`Episode`] / [`EpisodeBuilder`] hold one episode as flat `f32` vectors
//!   (`T + 1` observations, `T` actions and rewards), validated against a [`ReplaySpec`].
//! * [`ReplayBuffer`] keeps whole episodes up to a capacity in transitions, evicting the
//!   oldest first, and samples
//!   * uniform transitions ([`ReplayBuffer::sample_transitions`] → [`TransitionBatch`]),
//!   * fixed-length sequences in Dreamer alignment ([`ReplayBuffer::sample_sequences`] →
//!     [`SequenceBatch`], see [`sample`] for the alignment diagram).
//! * [`ReplayBuffer::open`] persists the buffer as an append-only, checksummed log (format
//!   documented byte by byte in [`storage`]); damaged files give a [`ReplayError`] naming
//!   the path and byte offset; a torn final record (an append cut short by a crash) is cut off
//!   on open, [`LoadMode::RecoverPrefix`] and [`recover_file`] keep the intact prefix of a
//!   corrupt file, and [`check_file`] reports without changing anything.
//! * [`ReplayBuffer::open_read_only`] reads a file without writing or locking it (evaluation,
//!   read-only folders, a file a run is writing).
//!
//! ```
//! use rand::SeedableRng;
//! use wm_replay::{EpisodeBuilder, ReplayBuffer, ReplaySpec, SequenceMode, Space};
//!
//! let spec = ReplaySpec::new(1, Space::Discrete { n: 2 });
//! let mut buffer = ReplayBuffer::new(spec.clone(), 1_000)?;
//! let mut builder = EpisodeBuilder::new(&spec, &[0.0])?;
//! for step in 1..=10 {
//!     builder.push(&[(step % 2) as f32], 1.0, &[step as f32])?;
//! }
//! buffer.insert(builder.finish(true, false)?)?;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let transitions = buffer.sample_transitions(&mut rng, 32)?;
//! assert_eq!(transitions.obs.len(), 32);
//! let sequences = buffer.sample_sequences(&mut rng, 4, 8, SequenceMode::WithinEpisodes)?;
//! assert_eq!(sequences.is_first.len(), 4 * 8);
//! # Ok::<(), wm_replay::ReplayError>(())
//! ```

#![warn(missing_docs)]

pub mod buffer;
pub mod episode;
pub mod error;
pub mod sample;
pub mod storage;

pub use buffer::ReplayBuffer;
pub use episode::{Episode, EpisodeBuilder, ReplaySpec};
pub use error::ReplayError;
pub use sample::{SequenceBatch, SequenceMode, TransitionBatch};
pub use storage::{DroppedTail, FileCheck, LoadMode, LoadReport, check_file, recover_file};
pub use wm_envs::Space;
