//! The crate's error type.
//!
//! Every message names the operation that failed and the values involved, so that a
//! log line alone is enough to act on (for example
//! "cannot sample 256 transitions: the buffer is empty").

use std::path::PathBuf;

/// Everything that can go wrong when building episodes, filling, sampling or
/// persisting a replay buffer.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The [`ReplaySpec`](crate::ReplaySpec) itself is unusable (for example `obs_dim == 0`).
    #[error("invalid replay spec: {reason}")]
    InvalidSpec {
        /// What is wrong with the spec.
        reason: String,
    },

    /// The buffer capacity is unusable (zero transitions).
    #[error("invalid replay capacity {capacity}: the capacity (in transitions) must be at least 1")]
    InvalidCapacity {
        /// The capacity that was asked for.
        capacity: usize,
    },

    /// A step pushed into an [`EpisodeBuilder`](crate::EpisodeBuilder) does not fit the spec.
    #[error("cannot push step {step} into the episode: {reason}")]
    InvalidStep {
        /// Index of the transition being pushed (0 for the first `push`).
        step: usize,
        /// What is wrong with it, with the offending values.
        reason: String,
    },

    /// A complete episode does not fit the spec (wrong lengths, non-finite values, ...).
    #[error("invalid episode: {reason}")]
    InvalidEpisode {
        /// What is wrong with it, with the offending values.
        reason: String,
    },

    /// An episode can never fit in the buffer, because it alone exceeds the capacity.
    #[error(
        "cannot insert an episode of {episode_transitions} transitions: \
         it is longer than the buffer capacity of {capacity} transitions"
    )]
    EpisodeLongerThanCapacity {
        /// Length of the rejected episode, in transitions.
        episode_transitions: usize,
        /// Capacity of the buffer, in transitions.
        capacity: usize,
    },

    /// A sampling call asked for nothing (batch size or sequence length of zero).
    #[error("cannot sample: {what} must be at least 1, got 0")]
    ZeroSampleSize {
        /// Which size was zero: "the batch size" or "the sequence length".
        what: &'static str,
    },

    /// Sampling was requested from an empty buffer.
    #[error("cannot sample {batch_size} {what}: the buffer is empty")]
    EmptyBuffer {
        /// The requested batch size.
        batch_size: usize,
        /// What was being sampled: "transitions" or "sequences".
        what: &'static str,
    },

    /// [`SequenceMode::WithinEpisodes`](crate::SequenceMode::WithinEpisodes) was requested
    /// but no stored episode has enough observations.
    #[error(
        "cannot sample sequences of {seq_len} steps within episodes: the longest stored episode has \
         {longest_episode_observations} observations ({} transitions); use a shorter seq_len or \
         SequenceMode::Straddle",
        .longest_episode_observations.saturating_sub(1)
    )]
    NoEpisodeLongEnough {
        /// The requested sequence length (observations per sequence).
        seq_len: usize,
        /// Observations in the longest stored episode (transitions + 1).
        longest_episode_observations: usize,
    },

    /// [`SequenceMode::Straddle`](crate::SequenceMode::Straddle) was requested but the whole
    /// buffer holds fewer observations than one sequence needs.
    #[error(
        "cannot sample sequences of {seq_len} steps: the buffer holds only {stored_observations} \
         observations in total (over all episodes)"
    )]
    NotEnoughObservations {
        /// The requested sequence length.
        seq_len: usize,
        /// Observations stored over all episodes.
        stored_observations: usize,
    },

    /// An episode record would not fit the file format's 32-bit payload length.
    #[error(
        "cannot store an episode of {episode_transitions} transitions: its record would take \
         {payload_bytes} bytes, more than the format's limit of {max_payload_bytes} bytes per episode"
    )]
    EpisodeTooLargeForFile {
        /// Length of the episode, in transitions.
        episode_transitions: usize,
        /// Size its payload would have.
        payload_bytes: u64,
        /// The largest payload a record can have (`u32::MAX`).
        max_payload_bytes: u64,
    },

    /// An I/O operation on the replay file failed.
    #[error("cannot {operation} replay file {}: {source}", .path.display())]
    Io {
        /// What was being done ("open", "append an episode to", "fsync", ...).
        operation: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Another process (or another buffer in this process) holds the file's lock.
    #[error(
        "replay file {} is already open in another ReplayBuffer (possibly in another process); \
         two writers would corrupt it",
        .path.display()
    )]
    FileLocked {
        /// The locked file.
        path: PathBuf,
    },

    /// The file header is damaged or the file is not a replay file; nothing can be recovered.
    #[error(
        "replay file {} has a bad header at byte {offset}: {reason}; no episode can be recovered \
         from it (move the file away to start a new buffer)",
        .path.display()
    )]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem within the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The file was written by a newer (or unknown) version of the format.
    #[error(
        "replay file {} uses format version {found_version}, but this build reads only version \
         {supported_version}",
        .path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the header.
        found_version: u32,
        /// The version this build writes and reads.
        supported_version: u32,
    },

    /// The file was written for a different observation/action layout.
    #[error(
        "replay file {} was written for spec {file_spec}, but spec {requested_spec} was requested; \
         use another file or the matching spec",
        .path.display()
    )]
    SpecMismatch {
        /// The file.
        path: PathBuf,
        /// The spec stored in the file, as JSON.
        file_spec: String,
        /// The spec passed to `open`, as JSON.
        requested_spec: String,
    },

    /// A record after the header is truncated, fails its checksum, or cannot be decoded.
    /// Only returned by [`LoadMode::Strict`](crate::LoadMode::Strict); `RecoverPrefix` keeps
    /// the intact episodes instead.
    #[error(
        "replay file {} is corrupt at byte {offset}: {reason}; {}",
        .path.display(),
        intact_prefix_hint(*.intact_episodes, .path)
    )]
    CorruptRecord {
        /// The file.
        path: PathBuf,
        /// Byte offset of the start of the bad record.
        offset: u64,
        /// What is wrong, naming the episode index (0-based, counted from the file start).
        reason: String,
        /// Number of intact episode records before `offset`.
        intact_episodes: usize,
    },
}

/// The advice part of [`ReplayError::CorruptRecord`]'s message: what is intact and the two
/// ways to keep it (the `wm` command for a run folder, the Rust API otherwise).
fn intact_prefix_hint(intact_episodes: usize, path: &std::path::Path) -> String {
    let intact = match intact_episodes {
        0 => "no episode before it is intact".to_string(),
        1 => "the first episode is intact".to_string(),
        n => format!("the first {n} episodes are intact"),
    };
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.display().to_string(),
        _ => ".".to_string(),
    };
    format!(
        "{intact} — `wm replay recover {folder}` (in Rust: wm_replay::recover_file or \
         LoadMode::RecoverPrefix) keeps them and cuts the file there"
    )
}

/// Shorthand for results carrying a [`ReplayError`].
pub type Result<T, E = ReplayError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_record_message_names_path_offset_and_recovery() {
        let error = ReplayError::CorruptRecord {
            path: PathBuf::from("runs/x/replay.wmrb"),
            offset: 18234,
            reason: "record checksum mismatch (episode 41)".to_string(),
            intact_episodes: 41,
        };
        assert_eq!(
            error.to_string(),
            "replay file runs/x/replay.wmrb is corrupt at byte 18234: record checksum mismatch \
             (episode 41); the first 41 episodes are intact — `wm replay recover runs/x` (in Rust: \
             wm_replay::recover_file or LoadMode::RecoverPrefix) keeps them and cuts the file there"
        );
    }

    #[test]
    fn empty_buffer_message_names_the_batch_size() {
        let error = ReplayError::EmptyBuffer {
            batch_size: 256,
            what: "transitions",
        };
        assert_eq!(
            error.to_string(),
            "cannot sample 256 transitions: the buffer is empty"
        );
    }

    #[test]
    fn no_episode_long_enough_message_names_seq_len_and_longest_episode() {
        let error = ReplayError::NoEpisodeLongEnough {
            seq_len: 50,
            longest_episode_observations: 21,
        };
        let message = error.to_string();
        assert!(message.contains("50 steps"), "{message}");
        assert!(
            message.contains("21 observations (20 transitions)"),
            "{message}"
        );
    }
}
