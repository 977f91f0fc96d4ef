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
            read_only: false,
        };
        Ok((buffer, report))
    }

    /// A memory-only buffer holding the episodes of the existing file at `path` (the newest
    /// `capacity_transitions` transitions), read without writing to the file and without its
    /// lock: for evaluation, on read-only folders and while a run is writing the file. Inserts
    /// stay in memory ([`path`](Self::path) is `None`).
    ///
    /// A missing file, a bad header, an unsupported version or another spec is an error. A
    /// torn final record (possibly an append in progress) is left out and reported in
    /// [`LoadReport::dropped_tail`]; other damage is an error under [`LoadMode::Strict`], and
    /// [`LoadMode::RecoverPrefix`] keeps the episodes before it. The file is never modified.
    pub fn open_read_only(
        path: impl AsRef<Path>,
        spec: ReplaySpec,
        capacity_transitions: usize,
        mode: LoadMode,
    ) -> Result<(Self, LoadReport)> {
        let path = path.as_ref();
        let mut buffer = Self::new(spec, capacity_transitions)?;
        let spec_for_file = buffer.spec.clone();
        let outcome = ReplayFile::read(path, &spec_for_file, mode, |episode| {
            buffer.push_and_evict(episode)
        })?;
        let report = LoadReport {
            path: path.to_path_buf(),
            created: false,
            episodes_in_file: outcome.episodes_in_file,
            transitions_in_file: outcome.transitions_in_file,
            episodes_loaded: buffer.n_episodes(),
            transitions_loaded: buffer.n_transitions(),
            dropped_tail: outcome.dropped_tail,
            compacted: false,
            read_only: true,
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

    /// Writes `n` episodes of `transitions` steps labelled 0..n to `path`.
    fn write_episodes(path: &Path, n: usize, transitions: usize) {
        let (mut buffer, _) =
            ReplayBuffer::open(path, spec(), 1000, LoadMode::Strict).expect("create");
        for label in 0..n {
            buffer
                .insert(labelled_episode(label, transitions, true))
                .expect("append");
        }
    }

    fn set_file_len(path: &Path, len: u64) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        file.set_len(len).expect("truncate");
    }

    #[test]
    fn torn_final_record_is_cut_off_on_open_with_a_report() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        write_episodes(&path, 3, 5);
        let full_len = std::fs::metadata(&path).expect("exists").len();
        let record = episode_record_bytes(&spec(), 5);
        let last_record_offset = header_bytes() + 2 * record;
        assert_eq!(full_len, last_record_offset + record);
        // An append cut short: the last record loses its final 7 bytes.
        set_file_len(&path, full_len - 7);

        let (mut buffer, report) = ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict)
            .expect("a torn tail is not an error");
        assert_eq!(labels(&buffer), vec![0, 1]);
        let dropped = report
            .dropped_tail
            .clone()
            .expect("the torn record is reported");
        assert_eq!(
            (dropped.offset, dropped.bytes, dropped.torn),
            (last_record_offset, record - 7, true),
            "{dropped:?}"
        );
        assert!(
            dropped.reason.contains("truncated record (episode 2)"),
            "{}",
            dropped.reason
        );
        let message = report.to_string();
        assert!(
            message.contains(&format!(
                "dropped a torn final record: {} bytes from byte {last_record_offset}",
                record - 7
            )),
            "{message}"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("exists").len(),
            last_record_offset,
            "the torn bytes are cut off"
        );
        buffer
            .insert(labelled_episode(7, 2, true))
            .expect("append after the cut");
        drop(buffer);
        let (buffer, report) =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("clean");
        assert_eq!(
            (labels(&buffer), report.dropped_tail),
            (vec![0, 1, 7], None)
        );
    }

    #[test]
    fn torn_record_header_is_cut_off_on_open() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        write_episodes(&path, 2, 4);
        let full_len = std::fs::metadata(&path).expect("exists").len();
        // Five bytes of a next record header.
        set_file_len(&path, full_len + 5);
        let (buffer, report) =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("torn header");
        assert_eq!(labels(&buffer), vec![0, 1]);
        let dropped = report.dropped_tail.expect("reported");
        assert_eq!(
            (dropped.offset, dropped.bytes, dropped.torn),
            (full_len, 5, true)
        );
        assert_eq!(std::fs::metadata(&path).expect("exists").len(), full_len);
    }

    #[test]
    fn nonsense_length_in_the_middle_is_corruption_not_a_torn_tail() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        write_episodes(&path, 4, 3);
        let full_len = std::fs::metadata(&path).expect("exists").len();
        let second_record_offset = header_bytes() + episode_record_bytes(&spec(), 3);
        let mut bytes = std::fs::read(&path).expect("read");
        // The second record's payload length becomes 0x7fff_fff1: past the end, and no episode's size.
        bytes[(second_record_offset + 4) as usize..(second_record_offset + 8) as usize]
            .copy_from_slice(&0x7fff_fff1u32.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write");
        let error =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect_err("corrupt length");
        let message = error.to_string();
        assert!(
            message.contains(&format!("corrupt at byte {second_record_offset}")),
            "{message}"
        );
        assert!(
            message.contains("the first episode is intact")
                && message.contains("wm replay recover"),
            "{message}"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("exists").len(),
            full_len,
            "Strict must not modify the file"
        );
    }

    #[test]
    fn read_only_open_loads_beside_a_writer_and_never_changes_the_file() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        let (mut writer, _) =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("create");
        for label in 0..3 {
            writer
                .insert(labelled_episode(label, 4, true))
                .expect("append");
        }
        // The writer holds the exclusive lock; a reader needs none.
        let (reader, report) = ReplayBuffer::open_read_only(&path, spec(), 1000, LoadMode::Strict)
            .expect("read beside the writer");
        assert_eq!(labels(&reader), vec![0, 1, 2]);
        assert!(
            report.read_only && !report.created && report.dropped_tail.is_none(),
            "{report:?}"
        );
        assert_eq!(reader.path(), None, "a reader never appends to the file");
        let second_reader = ReplayBuffer::open_read_only(&path, spec(), 1000, LoadMode::Strict)
            .expect("two readers");
        assert_eq!(second_reader.0.n_episodes(), 3);

        // A torn tail (an append in progress, say) is left out but stays in the file.
        let full_len = std::fs::metadata(&path).expect("exists").len();
        set_file_len(&path, full_len - 3);
        let (reader, report) =
            ReplayBuffer::open_read_only(&path, spec(), 1000, LoadMode::Strict).expect("torn tail");
        assert_eq!(labels(&reader), vec![0, 1]);
        assert!(
            report.dropped_tail.as_ref().is_some_and(|d| d.torn),
            "{report:?}"
        );
        assert!(
            report.to_string().contains("left out a torn final record"),
            "{report}"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("exists").len(),
            full_len - 3,
            "a reader never cuts the file"
        );
        drop(writer);

        let missing = folder.path().join("missing.wmrb");
        let error = ReplayBuffer::open_read_only(&missing, spec(), 1000, LoadMode::Strict)
            .expect_err("missing file");
        assert!(
            matches!(
                error,
                ReplayError::Io {
                    operation: "open",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!missing.exists(), "a reader never creates the file");
    }

    #[test]
    fn check_reports_and_recover_cuts_a_corrupt_middle() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("replay.wmrb");
        write_episodes(&path, 4, 3);
        let full_len = std::fs::metadata(&path).expect("exists").len();
        let third_record_offset = header_bytes() + 2 * episode_record_bytes(&spec(), 3);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[(third_record_offset + 12 + 9) as usize] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");

        let check = crate::check_file(&path, &spec()).expect("check");
        assert_eq!(
            (
                check.file_bytes,
                check.intact_episodes,
                check.intact_transitions
            ),
            (full_len, 2, 6)
        );
        let damage = check.damage.clone().expect("damage found");
        assert_eq!(
            (damage.offset, damage.bytes, damage.torn),
            (third_record_offset, full_len - third_record_offset, false)
        );
        assert!(check.to_string().contains("CORRUPT from byte"), "{check}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "check never changes the file"
        );

        let recovered = crate::recover_file(&path, &spec()).expect("recover");
        assert_eq!(
            recovered, check,
            "recover reports what the file held before the cut"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("exists").len(),
            third_record_offset
        );
        let (buffer, report) = ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict)
            .expect("clean after recovery");
        assert_eq!((labels(&buffer), report.dropped_tail), (vec![0, 1], None));
        drop(buffer);
        let clean = crate::check_file(&path, &spec()).expect("check");
        assert_eq!(clean.damage, None);
        assert!(clean.to_string().ends_with("no damage"), "{clean}");

        // Recovering is a writer's job: refused while another writer holds the file.
        let (_holder, _) =
            ReplayBuffer::open(&path, spec(), 1000, LoadMode::Strict).expect("writer");
        let error = crate::recover_file(&path, &spec()).expect_err("locked");
        assert!(matches!(error, ReplayError::FileLocked { .. }), "{error:?}");
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
