//! The replay buffer: a FIFO of whole episodes bounded by a capacity in transitions,
//! optionally mirrored to an append-only file (see [`crate::storage`]).
//!
//! # Memory
//!
//! Episodes are kept as exact-size `Vec<f32>`s, so memory is proportional to what is
//! stored: `4 * (obs_dim + action_width + 1)` bytes per transition (its observation,
//! action and reward), plus one extra observation (`4 * obs_dim` bytes) per episode (the
//! final one) and a constant per episode (three `Vec` headers, two flags, two `u64`
//! positions: about 100 bytes). A full buffer of CartPole (`obs_dim` 4, width 1) holds
//! 24 bytes per transition: 1M transitions take about 24 MB plus the per-episode overhead.
//!
//! # Eviction
//!
//! After every insert, the oldest episodes are evicted until at most `capacity`
//! transitions remain. Episodes are never split, so the buffer may hold slightly fewer
//! than `capacity` transitions; an episode longer than the capacity is rejected.

use std::collections::VecDeque;
use std::path::Path;

use rand::Rng;

use crate::episode::{Episode, ReplaySpec};
use crate::error::{ReplayError, Result};
use crate::sample::{self, SequenceBatch, SequenceMode, TransitionBatch};
use crate::storage::{self, LoadMode, LoadReport, ReplayFile};

/// An episode plus its position in the global numbering of everything ever inserted,
/// which lets sampling find the episode holding transition `k` by binary search without
/// renumbering on eviction.
#[derive(Debug)]
pub(crate) struct StoredEpisode {
    pub(crate) episode: Episode,
    /// Global index of this episode's first transition.
    pub(crate) first_transition: u64,
    /// Global index of this episode's first observation.
    pub(crate) first_observation: u64,
}

/// A bounded, episode-based replay buffer with uniform transition sampling and
/// Dreamer-style sequence sampling, optionally persisted to an append-only file.
#[derive(Debug)]
pub struct ReplayBuffer {
    spec: ReplaySpec,
    capacity: usize,
    episodes: VecDeque<StoredEpisode>,
    n_transitions: usize,
    next_first_transition: u64,
    next_first_observation: u64,
    /// Bytes the live episodes take as file records; compared with the file size to
    /// decide on compaction.
    live_record_bytes: u64,
    file: Option<ReplayFile>,
}

impl ReplayBuffer {
    /// A memory-only buffer holding at most `capacity_transitions` transitions.
    pub fn new(spec: ReplaySpec, capacity_transitions: usize) -> Result<Self> {
        spec.validate()?;
        if capacity_transitions == 0 {
            return Err(ReplayError::InvalidCapacity {
                capacity: capacity_transitions,
            });
        }
        Ok(Self {
            spec,
            capacity: capacity_transitions,
            episodes: VecDeque::new(),
            n_transitions: 0,
            next_first_transition: 0,
            next_first_observation: 0,
            live_record_bytes: 0,
            file: None,
        })
    }

    /// A buffer persisted at `path`: creates the file (and its folder) if missing,
    /// otherwise loads it, keeping the newest `capacity_transitions` transitions. From
    /// then on every [`insert`](Self::insert) appends the episode to the file.
    ///
    /// Fails on a bad header, an unsupported version, a spec different from `spec`, or
    /// (with [`LoadMode::Strict`]) any damaged record; [`LoadMode::RecoverPrefix`] keeps
    /// the episodes before the first damaged record and cuts the file there. If the file
    /// holds more than twice the bytes of the episodes kept, it is compacted.
    pub fn open(
        path: impl AsRef<Path>,
        spec: ReplaySpec,
        capacity_transitions: usize,
        mode: LoadMode,
    ) -> Result<(Self, LoadReport)> {
        let path = path.as_ref();
        let mut buffer = Self::new(spec, capacity_transitions)?;
        let spec_for_file = buffer.spec.clone();
        let (file, outcome) = ReplayFile::open(path, &spec_for_file, mode, |episode| {
            // The file may have been written with a larger capacity; the loop keeps the
            // newest episodes. An episode longer than this capacity is evicted right away.
            buffer.push_and_evict(episode);
        })?;
        buffer.file = Some(file);
        let compacted = buffer.compact_if_mostly_dead()?;
        let report = LoadReport {
            path: path.to_path_buf(),
            created: outcome.created,
            episodes_in_file: outcome.episodes_in_file,
            transitions_in_file: outcome.transitions_in_file,
            episodes_loaded: buffer.n_episodes(),
            transitions_loaded: buffer.n_transitions(),
            dropped_tail: outcome.dropped_tail,
            compacted,
        };
        Ok((buffer, report))
    }

    /// Stores a complete episode, evicting the oldest episodes beyond the capacity. For a
    /// persisted buffer the episode is first appended to the file (one write, no fsync),
    /// so when this returns it survives a crash of the process.
    ///
    /// Fails, storing nothing, if the episode does not match the spec or is longer than the
    /// capacity, or if the append fails. If the episode was stored but a compaction
    /// triggered by it failed, the compaction error is returned and the file is unchanged.
    pub fn insert(&mut self, mut episode: Episode) -> Result<()> {
        episode.validate(&self.spec)?;
        if episode.len() > self.capacity {
            return Err(ReplayError::EpisodeLongerThanCapacity {
                episode_transitions: episode.len(),
                capacity: self.capacity,
            });
        }
        if let Some(file) = &mut self.file {
            file.append(&self.spec, &episode)?;
        }
        // Episodes built by hand may carry spare capacity; drop it to keep memory
        // proportional to the data.
        episode.obs.shrink_to_fit();
        episode.actions.shrink_to_fit();
        episode.rewards.shrink_to_fit();
        self.push_and_evict(episode);
        self.compact_if_mostly_dead()?;
        Ok(())
    }

    /// Number of stored transitions (at most the capacity).
    pub fn n_transitions(&self) -> usize {
        self.n_transitions
    }

    /// Number of stored episodes.
    pub fn n_episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Number of stored observations: transitions plus one per episode.
    pub fn n_observations(&self) -> usize {
        self.n_transitions + self.episodes.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
    }

    /// The capacity in transitions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The spec every episode matches.
    pub fn spec(&self) -> &ReplaySpec {
        &self.spec
    }

    /// The backing file, or `None` for a memory-only buffer.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(ReplayFile::path)
    }

    /// The stored episodes, oldest first.
    pub fn episodes(&self) -> impl ExactSizeIterator<Item = &Episode> + DoubleEndedIterator {
        self.episodes.iter().map(|stored| &stored.episode)
    }

    /// Observations in the longest stored episode (0 when empty); sequences of up to this
    /// length can be sampled with [`SequenceMode::WithinEpisodes`].
    pub fn longest_episode_observations(&self) -> usize {
        self.episodes()
            .map(Episode::n_observations)
            .max()
            .unwrap_or(0)
    }

    /// fsyncs the backing file, so every inserted episode survives an OS crash or power
    /// loss; call it at checkpoints. (Each insert already reached the OS, which is enough
    /// to survive a crash of the process.) A no-op for a memory-only buffer.
    pub fn flush(&mut self) -> Result<()> {
        match &mut self.file {
            Some(file) => file.sync(),
            None => Ok(()),
        }
    }

    /// Same as [`flush`](Self::flush).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()
    }

    /// Rewrites the backing file to hold only the live episodes (write to a temporary file
    /// in the same folder, fsync, rename over the old one). Happens automatically when the
    /// file holds more than twice the live data; a no-op for a memory-only buffer.
    pub fn compact(&mut self) -> Result<()> {
        if let Some(file) = &mut self.file {
            file.rewrite(
                &self.spec,
                self.episodes.iter().map(|stored| &stored.episode),
            )?;
        }
        Ok(())
    }

    /// Bytes of the backing file (0 for a memory-only buffer).
    pub fn file_bytes(&self) -> u64 {
        self.file.as_ref().map_or(0, |file| file.len())
    }

    /// Draws `batch_size` transitions uniformly (with replacement) from all stored
    /// transitions, using only `rng` for randomness.
    pub fn sample_transitions<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        batch_size: usize,
    ) -> Result<TransitionBatch> {
        sample::sample_transitions(
            rng,
            &self.spec,
            &self.episodes,
            self.n_transitions,
            batch_size,
        )
    }

    /// Draws `batch_size` sequences of `seq_len` consecutive steps (with replacement) in
    /// Dreamer alignment; see [`crate::sample`] for the alignment and [`SequenceMode`] for
    /// how episode boundaries are treated.
    pub fn sample_sequences<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        batch_size: usize,
        seq_len: usize,
        mode: SequenceMode,
    ) -> Result<SequenceBatch> {
        sample::sample_sequences(
            rng,
            &self.spec,
            &self.episodes,
            self.n_transitions,
            batch_size,
            seq_len,
            mode,
        )
    }

    /// Appends `episode` to memory and evicts from the front down to the capacity.
    fn push_and_evict(&mut self, episode: Episode) {
        let transitions = episode.len();
        self.live_record_bytes += storage::episode_record_bytes(&self.spec, transitions);
        self.episodes.push_back(StoredEpisode {
            first_transition: self.next_first_transition,
            first_observation: self.next_first_observation,
            episode,
        });
        self.n_transitions += transitions;
        self.next_first_transition += transitions as u64;
        self.next_first_observation += transitions as u64 + 1;
        while self.n_transitions > self.capacity {
            let evicted = self
                .episodes
                .pop_front()
                .expect("a buffer over capacity should hold an episode");
            self.n_transitions -= evicted.episode.len();
            self.live_record_bytes -=
                storage::episode_record_bytes(&self.spec, evicted.episode.len());
        }
    }

    /// Compacts when evicted episodes make up more than half of the file's records; this
    /// bounds the file at about twice the live data while rewriting each byte only a
    /// constant number of times on average. Returns whether it compacted.
    fn compact_if_mostly_dead(&mut self) -> Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        if file.record_bytes() > 2 * self.live_record_bytes {
            self.compact()?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::episode_record_bytes;
    use wm_envs::Space;

    fn spec() -> ReplaySpec {
        ReplaySpec::new(2, Space::Discrete { n: 3 })
    }

    /// An episode of `transitions` steps whose observations encode `(label, step)`, so
    /// tests can tell episodes and steps apart after a round trip.
    fn labelled_episode(label: usize, transitions: usize, terminated: bool) -> Episode {
        let spec = spec();
        let mut builder =
            EpisodeBuilder::new(&spec, &[label as f32, 0.0]).expect("valid first obs");
        for step in 1..=transitions {
            builder
                .push(
                    &[(step % 3) as f32],
                    (label * 1000 + step) as f32,
                    &[label as f32, step as f32],
                )
                .expect("valid step");
        }
        builder.finish(terminated, !terminated).expect("non-empty")
    }

    fn labels(buffer: &ReplayBuffer) -> Vec<usize> {
        buffer
            .episodes()
            .map(|episode| episode.obs[0] as usize)
            .collect()
    }

    use crate::episode::EpisodeBuilder;

    fn header_bytes() -> u64 {
        storage::encode_header_len_for_tests(&spec())
    }

    #[test]
    fn push_evicts_oldest_episode_when_full() {
        let mut buffer = ReplayBuffer::new(spec(), 10).expect("valid");
        buffer.insert(labelled_episode(0, 4, true)).expect("fits");
        buffer.insert(labelled_episode(1, 4, true)).expect("fits");
        assert_eq!((buffer.n_episodes(), buffer.n_transitions()), (2, 8));
        buffer
            .insert(labelled_episode(2, 3, true))
            .expect("fits after evicting episode 0");
        assert_eq!(labels(&buffer), vec![1, 2]);
        assert_eq!(buffer.n_transitions(), 7);
        assert_eq!(buffer.n_observations(), 9);
        buffer
            .insert(labelled_episode(3, 10, false))
            .expect("exactly the capacity");
        assert_eq!(labels(&buffer), vec![3]);
        assert_eq!(buffer.n_transitions(), 10);
    }

    #[test]
    fn episode_longer_than_capacity_is_rejected_without_changes() {
        let mut buffer = ReplayBuffer::new(spec(), 5).expect("valid");
        buffer.insert(labelled_episode(0, 2, true)).expect("fits");
        let error = buffer
            .insert(labelled_episode(1, 6, true))
            .expect_err("6 > 5");
        assert!(matches!(
            error,
            ReplayError::EpisodeLongerThanCapacity {
                episode_transitions: 6,
                capacity: 5
            }
        ));
        assert!(error.to_string().contains("6 transitions"), "{error}");
        assert_eq!(labels(&buffer), vec![0]);
    }

    #[test]
    fn invalid_episode_is_rejected_without_changes() {
        let mut buffer = ReplayBuffer::new(spec(), 50).expect("valid");
        let mut episode = labelled_episode(0, 3, true);
        episode.actions[1] = 7.0; // not an index of Discrete { n: 3 }
        assert!(buffer.insert(episode).is_err());
        assert!(buffer.is_empty());
    }

    #[test]
    fn zero_capacity_is_rejected() {
        let error = ReplayBuffer::new(spec(), 0).expect_err("capacity 0");
        assert!(error.to_string().contains("capacity 0"), "{error}");
    }

    #[test]
    fn reload_gives_the_same_episodes() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("run").join("replay.wmrb");
        let inserted: Vec<Episode> = (0..5)
            .map(|label| labelled_episode(label, 2 + label, label % 2 == 0))
            .collect();
        {
            let (mut buffer, report) =
                ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("create");
            assert!(report.created);
            assert_eq!(buffer.path(), Some(path.as_path()));
            for episode in &inserted {
                buffer.insert(episode.clone()).expect("append");
            }
            buffer.flush().expect("fsync");
        }
        let (buffer, report) =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("reload");
        assert!(!report.created);
        assert_eq!(report.episodes_in_file, 5);
        assert_eq!(report.episodes_loaded, 5);
        assert_eq!(report.transitions_loaded, 2 + 3 + 4 + 5 + 6);
        assert_eq!(report.dropped_tail, None);
        let reloaded: Vec<Episode> = buffer.episodes().cloned().collect();
        assert_eq!(reloaded, inserted);
    }

    #[test]
    fn reload_keeps_the_newest_transitions_within_capacity() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        {
            let (mut buffer, _) =
                ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("create");
            for label in 0..6 {
                buffer
                    .insert(labelled_episode(label, 4, true))
                    .expect("append");
            }
        }
        let (buffer, report) =
            ReplayBuffer::open(&path, spec(), 9, LoadMode::Strict).expect("reload");
        assert_eq!(labels(&buffer), vec![4, 5]);
        assert_eq!(
            (report.episodes_in_file, report.transitions_in_file),
            (6, 24)
        );
        assert_eq!((report.episodes_loaded, report.transitions_loaded), (2, 8));
        assert!(
            report.compacted,
            "24 transitions in the file for 8 live ones should compact"
        );
        drop(buffer);
        let (buffer, report) =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("reload");
        assert_eq!(
            report.episodes_in_file, 2,
            "compaction should have dropped evicted episodes"
        );
        assert_eq!(labels(&buffer), vec![4, 5]);
    }

    #[test]
    fn truncated_file_is_reported_with_offset() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        {
            let (mut buffer, _) =
                ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("create");
            for label in 0..3 {
                buffer
                    .insert(labelled_episode(label, 5, true))
                    .expect("append");
            }
        }
        let full_len = std::fs::metadata(&path).expect("exists").len();
        let last_record_offset = header_bytes() + 2 * episode_record_bytes(&spec(), 5);
        assert_eq!(
            full_len,
            last_record_offset + episode_record_bytes(&spec(), 5)
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(full_len - 7).expect("truncate");
        drop(file);

        let error =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect_err("torn record");
        match &error {
            ReplayError::CorruptRecord {
                offset,
                intact_episodes,
                reason,
                ..
            } => {
                assert_eq!(*offset, last_record_offset);
                assert_eq!(*intact_episodes, 2);
                assert!(reason.contains("truncated record (episode 2)"), "{reason}");
            }
            other => panic!("expected CorruptRecord, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("corrupt at byte {last_record_offset}")),
            "{message}"
        );
        assert!(
            message.contains("the first 2 episodes are intact"),
            "{message}"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("exists").len(),
            full_len - 7,
            "Strict must not modify the file"
        );
    }

    #[test]
    fn flipped_byte_is_reported_as_checksum_error() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        {
            let (mut buffer, _) =
                ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("create");
            for label in 0..4 {
                buffer
                    .insert(labelled_episode(label, 3, true))
                    .expect("append");
            }
        }
        let mut bytes = std::fs::read(&path).expect("read");
        let second_record_offset = header_bytes() + episode_record_bytes(&spec(), 3);
        // A byte inside the second record's observations.
        bytes[(second_record_offset + 12 + 8 + 5) as usize] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");

        let error =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect_err("flipped byte");
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "corrupt at byte {second_record_offset}: record checksum mismatch (episode 1)"
            )),
            "{message}"
        );
        assert!(message.contains("the first episode is intact"), "{message}");
    }

    #[test]
    fn recover_prefix_keeps_intact_episodes_and_appends_cleanly() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        {
            let (mut buffer, _) =
                ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("create");
            for label in 0..4 {
                buffer
                    .insert(labelled_episode(label, 3, true))
                    .expect("append");
            }
        }
        let full_len = std::fs::metadata(&path).expect("exists").len();
        let third_record_offset = header_bytes() + 2 * episode_record_bytes(&spec(), 3);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[(third_record_offset + 12 + 20) as usize] ^= 0xFF;
        std::fs::write(&path, &bytes).expect("write");

        let (mut buffer, report) =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::RecoverPrefix).expect("recover");
        assert_eq!(labels(&buffer), vec![0, 1]);
        let dropped = report.dropped_tail.clone().expect("a tail was dropped");
        assert_eq!(dropped.offset, third_record_offset);
        assert_eq!(dropped.bytes, full_len - third_record_offset);
        assert!(
            dropped.reason.contains("checksum mismatch (episode 2)"),
            "{}",
            dropped.reason
        );
        assert!(report.to_string().contains("dropped"), "{report}");
        assert_eq!(
            std::fs::metadata(&path).expect("exists").len(),
            third_record_offset
        );

        buffer
            .insert(labelled_episode(9, 2, false))
            .expect("append after recovery");
        drop(buffer);
        let (buffer, report) =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("clean file");
        assert_eq!(report.dropped_tail, None);
        assert_eq!(labels(&buffer), vec![0, 1, 9]);
    }

    #[test]
    fn wrong_spec_is_rejected() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        drop(ReplayBuffer::open(&path, spec(), 100, LoadMode::Strict).expect("create"));
        let other_spec = ReplaySpec::new(
            2,
            Space::Box {
                low: vec![-1.0],
                high: vec![1.0],
            },
        );
        let error = ReplayBuffer::open(&path, other_spec, 100, LoadMode::RecoverPrefix)
            .expect_err("different spec");
        assert!(
            matches!(error, ReplayError::SpecMismatch { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(r#""Discrete":{"n":3}"#), "{message}");
        assert!(message.contains(r#""Box""#), "{message}");
        let other_obs_dim = ReplaySpec::new(3, Space::Discrete { n: 3 });
        assert!(ReplayBuffer::open(&path, other_obs_dim, 100, LoadMode::Strict).is_err());
    }

    #[test]
    fn bad_magic_is_reported_as_bad_header() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        std::fs::write(&path, b"this is not a replay file, just some text").expect("write");
        let error = ReplayBuffer::open(&path, spec(), 100, LoadMode::RecoverPrefix)
            .expect_err("not a replay file");
        assert!(
            matches!(error, ReplayError::BadHeader { offset: 0, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("magic bytes"), "{error}");
    }

    #[test]
    fn corrupt_header_is_reported_even_when_recovering() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        drop(ReplayBuffer::open(&path, spec(), 100, LoadMode::Strict).expect("create"));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 0x01; // inside the spec JSON
        std::fs::write(&path, &bytes).expect("write");
        let error = ReplayBuffer::open(&path, spec(), 100, LoadMode::RecoverPrefix)
            .expect_err("bad header crc");
        assert!(
            error.to_string().contains("header checksum mismatch"),
            "{error}"
        );
    }

    #[test]
    fn newer_format_version_is_rejected() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        drop(ReplayBuffer::open(&path, spec(), 100, LoadMode::Strict).expect("create"));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[8] = 2;
        std::fs::write(&path, &bytes).expect("write");
        let error =
            ReplayBuffer::open(&path, spec(), 100, LoadMode::Strict).expect_err("version 2");
        assert!(
            matches!(
                error,
                ReplayError::UnsupportedVersion {
                    found_version: 2,
                    supported_version: 1,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn compaction_keeps_live_episodes() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        let capacity = 20;
        let (mut buffer, _) =
            ReplayBuffer::open(&path, spec(), capacity, LoadMode::Strict).expect("create");
        let record_bytes = episode_record_bytes(&spec(), 5);
        let mut largest_file = 0;
        for label in 0..50 {
            buffer
                .insert(labelled_episode(label, 5, label % 3 == 0))
                .expect("append");
            let file_len = std::fs::metadata(&path).expect("exists").len();
            assert_eq!(file_len, buffer.file_bytes());
            largest_file = largest_file.max(file_len);
        }
        // Live data is 4 records; the file must never hold more than about twice that.
        assert!(
            largest_file <= header_bytes() + 2 * 4 * record_bytes + record_bytes,
            "file grew to {largest_file} bytes for 4 live records of {record_bytes} bytes"
        );
        let live: Vec<Episode> = buffer.episodes().cloned().collect();
        assert_eq!(labels(&buffer), vec![46, 47, 48, 49]);
        buffer
            .insert(labelled_episode(50, 5, true))
            .expect("append after compactions");
        drop(buffer);
        let (reloaded, report) =
            ReplayBuffer::open(&path, spec(), capacity, LoadMode::Strict).expect("reload");
        assert_eq!(report.dropped_tail, None);
        assert_eq!(labels(&reloaded), vec![47, 48, 49, 50]);
        assert_eq!(
            reloaded.episodes().take(3).cloned().collect::<Vec<_>>(),
            live[1..].to_vec()
        );
        assert!(
            !folder.path().join("replay.wmrb.tmp").exists(),
            "the temporary file should be renamed away"
        );
    }

    #[test]
    fn second_open_of_the_same_file_is_refused() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        let (first, _) = ReplayBuffer::open(&path, spec(), 100, LoadMode::Strict).expect("create");
        let error = ReplayBuffer::open(&path, spec(), 100, LoadMode::Strict).expect_err("locked");
        assert!(matches!(error, ReplayError::FileLocked { .. }), "{error:?}");
        drop(first);
        ReplayBuffer::open(&path, spec(), 100, LoadMode::Strict).expect("lock released on drop");
    }

    #[test]
    fn memory_only_buffer_has_no_file() {
        let mut buffer = ReplayBuffer::new(spec(), 100).expect("valid");
        buffer.insert(labelled_episode(0, 3, true)).expect("fits");
        assert_eq!(buffer.path(), None);
        assert_eq!(buffer.file_bytes(), 0);
        buffer.flush().expect("no-op");
        buffer.compact().expect("no-op");
    }
}
