//! Persistence: an append-only, checksummed log of episodes.
//!
//! # File format (version 1)
//!
//! All integers are little-endian; all floats are IEEE-754 `f32`, little-endian.
//!
//! ```text
//! offset  size  field
//! ------  ----  -----------------------------------------------------------------
//! header:
//!      0     8  magic bytes  57 4D 52 42 0D 0A 1A 0A  ("WMRB\r\n\x1a\n": the CR/LF/^Z
//!               catch files mangled by text-mode transfers, as in PNG)
//!      8     4  format version (u32) = 1
//!     12     4  spec_len (u32): length of the spec JSON in bytes
//!     16     S  spec JSON (UTF-8), e.g. {"obs_dim":4,"action_space":{"Discrete":{"n":2}}}
//!               or {"obs_dim":3,"action_space":{"Box":{"low":[-2.0],"high":[2.0]}}};
//!               non-finite bounds are the strings "inf", "-inf", "NaN"
//!   16+S     4  header CRC32 (IEEE, as zlib/crc32fast) of bytes 0 .. 16+S
//! records, one after another until the end of the file:
//!     +0     4  tag (u32): 1 = episode (no other tag exists in version 1)
//!     +4     4  payload_len (u32)
//!     +8     4  CRC32 of (tag bytes, payload_len bytes, payload)
//!    +12     P  payload
//! episode payload (T = number of transitions, D = obs_dim, A = action width):
//!     +0     4  T (u32), at least 1
//!     +4     4  flags (u32): bit 0 = terminated, bit 1 = truncated, other bits 0
//!     +8     4*(T+1)*D  observations o0..oT, row-major f32
//!      .     4*T*A      actions a0..a(T-1), row-major f32 (discrete: the index as f32)
//!      .     4*T        rewards r0..r(T-1), f32
//! so payload_len = 8 + 4*((T+1)*D + T*A + T), and a record takes 12 more bytes.
//! ```
//!
//! # Durability
//!
//! Each episode is written with a single `write` of the whole record as soon as it is
//! inserted, so a crash or kill of the process loses at most the episode being built; an
//! OS crash or power loss can lose what was not yet fsynced (see
//! [`ReplayBuffer::flush`](crate::ReplayBuffer::flush)). A torn last record is detected on
//! load and reported with its byte offset: a record that stops early at the end of the file
//! under a plausible header (an append cut short) is cut off on open in any mode; other damage
//! (a checksum mismatch, a nonsense length) is an error unless `LoadMode::RecoverPrefix` cuts
//! it off ([`recover_file`] does the same without loading; [`check_file`] only reports). New files and compacted files are written to `<path>.tmp`, fsynced and
//! renamed over `<path>`, so the header is never torn.
//!
//! While a buffer has the file open it holds an exclusive advisory lock on it, so a
//! second writer (another run pointed at the same folder) gets an error instead of
//! interleaving records. Readers ([`ReplayBuffer::open_read_only`](crate::ReplayBuffer::open_read_only))
//! take no lock and never write: they read the records complete when they opened the file,
//! so they work on read-only folders and beside a running writer.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::episode::{Episode, ReplaySpec};
use crate::error::{ReplayError, Result};
use wm_envs::Space;

/// The 8 magic bytes that open every replay file.
pub const MAGIC: [u8; 8] = *b"WMRB\r\n\x1a\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Record tag of an episode record.
pub const EPISODE_RECORD_TAG: u32 = 1;
/// Size of a record's `[tag][payload_len][crc32]` prefix.
pub const RECORD_HEADER_BYTES: u64 = 12;
/// Size of the fixed part of the file header (magic, version, spec length).
const HEADER_FIXED_BYTES: u64 = 16;
/// Size of the fixed part of an episode payload (transition count, flags).
const EPISODE_PAYLOAD_FIXED_BYTES: u64 = 8;
const FLAG_TERMINATED: u32 = 1;
const FLAG_TRUNCATED: u32 = 2;

/// How [`ReplayBuffer::open`](crate::ReplayBuffer::open) treats a damaged record.
///
/// In both modes a *torn final record* (a record at the end of the file whose header is
/// plausible but whose bytes stop early: an append cut short by a kill or a full disk) is cut
/// off and reported in [`LoadReport::dropped_tail`] (with `torn: true`); it is the ordinary
/// trace of a crash, not corruption.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadMode {
    /// Any other damaged record (checksum mismatch, undecodable, nonsense length) is an
    /// error ([`ReplayError::CorruptRecord`]); the file is left untouched.
    #[default]
    Strict,
    /// Keep the episodes before the first damaged record, cut the file there (so appends
    /// continue cleanly) and describe what was dropped in [`LoadReport::dropped_tail`].
    /// A bad header, a different spec or an unsupported version is still an error.
    RecoverPrefix,
}

/// The part of a file that was cut off (or, read-only, left out) at the first damaged record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedTail {
    /// Byte offset where the first damaged record started (a writer cut the file here).
    pub offset: u64,
    /// Number of bytes from `offset` to the end of the file.
    pub bytes: u64,
    /// Why the record at `offset` was rejected (names the episode index).
    pub reason: String,
    /// The damage was a torn final record (an append cut short), not corruption.
    pub torn: bool,
}

/// What [`ReplayBuffer::open`](crate::ReplayBuffer::open) found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// The replay file.
    pub path: PathBuf,
    /// The file did not exist and was created (empty buffer).
    pub created: bool,
    /// Intact episode records found in the file.
    pub episodes_in_file: usize,
    /// Transitions in those records.
    pub transitions_in_file: usize,
    /// Episodes kept in memory: the newest ones that fit the capacity.
    pub episodes_loaded: usize,
    /// Transitions kept in memory.
    pub transitions_loaded: usize,
    /// What was dropped from the end of the file (a torn final record, or any damage under
    /// `RecoverPrefix`), if anything.
    pub dropped_tail: Option<DroppedTail>,
    /// The file was only read ([`ReplayBuffer::open_read_only`](crate::ReplayBuffer::open_read_only)):
    /// a dropped tail was left out of memory but is still in the file.
    pub read_only: bool,
    /// The file held much more than the live episodes and was rewritten to hold only them.
    pub compacted: bool,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.created {
            return write!(formatter, "created replay file {}", self.path.display());
        }
        write!(
            formatter,
            "loaded {} episodes ({} transitions) of the {} episodes ({} transitions) in replay file {}",
            self.episodes_loaded,
            self.transitions_loaded,
            self.episodes_in_file,
            self.transitions_in_file,
            self.path.display()
        )?;
        if let Some(dropped) = &self.dropped_tail {
            let what = if dropped.torn {
                "a torn final record"
            } else {
                "damaged records"
            };
            let action = if self.read_only {
                "left out"
            } else {
                "dropped"
            };
            write!(
                formatter,
                "; {action} {what}: {} bytes from byte {} ({})",
                dropped.bytes, dropped.offset, dropped.reason
            )?;
        }
        if self.compacted {
            write!(formatter, "; compacted the file to the loaded episodes")?;
        }
        Ok(())
    }
}

/// What [`ReplayFile::open`] read, before the buffer applies its capacity.
pub(crate) struct FileLoadOutcome {
    pub(crate) created: bool,
    pub(crate) episodes_in_file: usize,
    pub(crate) transitions_in_file: usize,
    pub(crate) dropped_tail: Option<DroppedTail>,
}

/// An open, locked replay file positioned for appends.
#[derive(Debug)]
pub(crate) struct ReplayFile {
    path: PathBuf,
    file: File,
    /// Current file length; appends go here.
    len: u64,
    header_len: u64,
}

impl ReplayFile {
    /// Opens `path` (creating it with an empty log if missing), checks its header against
    /// `spec`, and hands every intact episode, oldest first, to `on_episode`.
    pub(crate) fn open(
        path: &Path,
        spec: &ReplaySpec,
        mode: LoadMode,
        mut on_episode: impl FnMut(Episode),
    ) -> Result<(Self, FileLoadOutcome)> {
        let exists = path
            .try_exists()
            .map_err(|source| io_error("check for", path, source))?;
        if !exists {
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)
                    .map_err(|source| io_error("create the folder of", path, source))?;
            }
            let replay_file = Self::write_new_file(path, spec, std::iter::empty())?;
            let outcome = FileLoadOutcome {
                created: true,
                episodes_in_file: 0,
                transitions_in_file: 0,
                dropped_tail: None,
            };
            return Ok((replay_file, outcome));
        }

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| io_error("open", path, source))?;
        lock_exclusively(&file, path)?;
        let scan = scan_file(&file, path, spec, &mut on_episode)?;

        let mut dropped_tail = None;
        let mut len = scan.file_len;
        if let Some(damage) = scan.damage {
            if !damage.torn && mode == LoadMode::Strict {
                return Err(damage.into_error(path, scan.episodes_in_file));
            }
            // A torn final record (an append cut short by a crash or a full disk) is cut off
            // whatever the mode; so is any damage under RecoverPrefix. Cutting it lets the next
            // append start right after the last intact record; otherwise the garbage would sit
            // between records forever.
            file.set_len(damage.offset)
                .map_err(|source| io_error("truncate the damaged tail of", path, source))?;
            file.sync_all()
                .map_err(|source| io_error("fsync", path, source))?;
            len = damage.offset;
            dropped_tail = Some(damage.into_dropped(scan.file_len));
        }

        let replay_file = Self {
            path: path.to_path_buf(),
            file,
            len,
            header_len: scan.header_len,
        };
        let outcome = FileLoadOutcome {
            created: false,
            episodes_in_file: scan.episodes_in_file,
            transitions_in_file: scan.transitions_in_file,
            dropped_tail,
        };
        Ok((replay_file, outcome))
    }

    /// Reads `path` without writing to it and without its lock (a writer may be appending to
    /// it): checks the header against `spec` and hands every intact episode, oldest first, to
    /// `on_episode`. A missing file is an error. A torn final record (possibly an append in
    /// progress) is left out and reported; other damage is an error under
    /// [`LoadMode::Strict`], and under [`LoadMode::RecoverPrefix`] the episodes before it are
    /// kept. The file is never modified.
    pub(crate) fn read(
        path: &Path,
        spec: &ReplaySpec,
        mode: LoadMode,
        mut on_episode: impl FnMut(Episode),
    ) -> Result<FileLoadOutcome> {
        let file = File::open(path).map_err(|source| io_error("open", path, source))?;
        let scan = scan_file(&file, path, spec, &mut on_episode)?;
        let mut dropped_tail = None;
        if let Some(damage) = scan.damage {
            if !damage.torn && mode == LoadMode::Strict {
                return Err(damage.into_error(path, scan.episodes_in_file));
            }
            dropped_tail = Some(damage.into_dropped(scan.file_len));
        }
        Ok(FileLoadOutcome {
            created: false,
            episodes_in_file: scan.episodes_in_file,
            transitions_in_file: scan.transitions_in_file,
            dropped_tail,
        })
    }

    /// Appends one episode record with a single write. On failure the file is cut back
    /// to its previous length, so a failed append never leaves a half record behind.
    pub(crate) fn append(&mut self, spec: &ReplaySpec, episode: &Episode) -> Result<()> {
        let record = encode_episode_record(spec, episode)?;
        let write_result = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&record))
            .and_then(|()| self.file.flush());
        if let Err(source) = write_result {
            // Best effort: if this fails too, the torn record is caught by the next load.
            let _ = self.file.set_len(self.len);
            return Err(io_error("append an episode to", &self.path, source));
        }
        self.len += record.len() as u64;
        Ok(())
    }

    /// fsyncs the file, making every appended episode durable against OS crashes.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|source| io_error("fsync", &self.path, source))
    }

    /// Replaces the file by one holding only `episodes`: written to `<path>.tmp`, fsynced,
    /// then renamed over the old file, so a crash leaves either the old or the new file.
    pub(crate) fn rewrite<'a>(
        &mut self,
        spec: &ReplaySpec,
        episodes: impl Iterator<Item = &'a Episode>,
    ) -> Result<()> {
        let replacement = Self::write_new_file(&self.path, spec, episodes)?;
        // Dropping the old handle releases the lock on the old (now unlinked) inode; the
        // replacement already holds the lock on the new one.
        *self = replacement;
        Ok(())
    }

    /// Bytes taken by episode records (the file minus its header).
    pub(crate) fn record_bytes(&self) -> u64 {
        self.len - self.header_len
    }

    /// Current length of the file in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn write_new_file<'a>(
        path: &Path,
        spec: &ReplaySpec,
        episodes: impl Iterator<Item = &'a Episode>,
    ) -> Result<Self> {
        let temporary_path = temporary_path_for(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary_path)
            .map_err(|source| io_error("create", &temporary_path, source))?;
        lock_exclusively(&file, &temporary_path)?;
        let written =
            write_header_and_records(&file, &temporary_path, spec, episodes).and_then(|len| {
                file.sync_all()
                    .map_err(|source| io_error("fsync", &temporary_path, source))?;
                std::fs::rename(&temporary_path, path)
                    .map_err(|source| io_error("rename the new file over", path, source))?;
                Ok(len)
            });
        let len = match written {
            Ok(len) => len,
            Err(error) => {
                // Best effort: a leftover temporary file would only waste space (a full disk is
                // the likely cause), it is never read.
                let _ = std::fs::remove_file(&temporary_path);
                return Err(error);
            }
        };
        sync_parent_folder(path)?;
        let header_len = encode_header(spec).len() as u64;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            header_len,
        })
    }
}

/// Damage found after the header: where the first bad record starts and why it is bad.
struct Damage {
    offset: u64,
    reason: String,
    /// The record runs past the end of the file with a plausible header: an append that was
    /// cut short (a kill during the write, a full disk), not corruption.
    torn: bool,
}

impl Damage {
    fn into_error(self, path: &Path, intact_episodes: usize) -> ReplayError {
        ReplayError::CorruptRecord {
            path: path.to_path_buf(),
            offset: self.offset,
            reason: self.reason,
            intact_episodes,
        }
    }

    fn into_dropped(self, file_len: u64) -> DroppedTail {
        DroppedTail {
            offset: self.offset,
            bytes: file_len - self.offset,
            reason: self.reason,
            torn: self.torn,
        }
    }
}

/// What [`scan_file`] found.
struct Scan {
    header_len: u64,
    file_len: u64,
    episodes_in_file: usize,
    transitions_in_file: usize,
    damage: Option<Damage>,
}

/// Reads the header and every record of `file` from the start, handing intact episodes to
/// `on_episode`, and stops at the first damaged record.
fn scan_file(
    file: &File,
    path: &Path,
    spec: &ReplaySpec,
    on_episode: &mut impl FnMut(Episode),
) -> Result<Scan> {
    let file_len = file
        .metadata()
        .map_err(|source| io_error("read the size of", path, source))?
        .len();
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|source| io_error("read", path, source))?;
    let header_len = read_and_check_header(&mut reader, path, spec, file_len)?;
    let mut offset = header_len;
    let mut episodes_in_file = 0usize;
    let mut transitions_in_file = 0usize;
    let mut damage = None;
    while offset < file_len {
        match read_episode_record(&mut reader, path, spec, offset, file_len, episodes_in_file)? {
            Ok((episode, record_len)) => {
                offset += record_len;
                episodes_in_file += 1;
                transitions_in_file += episode.len();
                on_episode(episode);
            }
            Err(RecordDamage { reason, torn }) => {
                damage = Some(Damage {
                    offset,
                    reason,
                    torn,
                });
                break;
            }
        }
    }
    Ok(Scan {
        header_len,
        file_len,
        episodes_in_file,
        transitions_in_file,
        damage,
    })
}

/// What a check of a replay file found (see [`check_file`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// Intact episode records before the first damaged one (all of them when undamaged).
    pub intact_episodes: usize,
    /// Transitions in those records.
    pub intact_transitions: usize,
    /// The first damaged record and everything after it, if any.
    pub damage: Option<DroppedTail>,
}

impl std::fmt::Display for FileCheck {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}: {} bytes, {} intact episodes ({} transitions)",
            self.path.display(),
            self.file_bytes,
            self.intact_episodes,
            self.intact_transitions
        )?;
        match &self.damage {
            None => write!(formatter, ", no damage"),
            Some(damage) if damage.torn => write!(
                formatter,
                "; a torn final record ({} bytes from byte {}: {}), cut off automatically when a writer opens the file",
                damage.bytes, damage.offset, damage.reason
            ),
            Some(damage) => write!(
                formatter,
                "; CORRUPT from byte {} ({} bytes: {}); recovering keeps the {} intact episodes and cuts the rest",
                damage.offset, damage.bytes, damage.reason, self.intact_episodes
            ),
        }
    }
}

/// Reads the replay file at `path` without modifying or locking it and reports the intact
/// episodes and the first damaged record, if any. Fails only when the file cannot be read or
/// its header is bad, of another version or of another spec than `spec`.
pub fn check_file(path: &Path, spec: &ReplaySpec) -> Result<FileCheck> {
    let file = File::open(path).map_err(|source| io_error("open", path, source))?;
    let scan = scan_file(&file, path, spec, &mut |_| {})?;
    Ok(FileCheck {
        path: path.to_path_buf(),
        file_bytes: scan.file_len,
        intact_episodes: scan.episodes_in_file,
        intact_transitions: scan.transitions_in_file,
        damage: scan.damage.map(|damage| damage.into_dropped(scan.file_len)),
    })
}

/// Keeps the intact prefix of the replay file at `path`: cuts the file at its first damaged
/// record (under the file's exclusive lock, so not while a run is writing it) and returns what
/// the file held before the cut. An undamaged file is left as it is.
pub fn recover_file(path: &Path, spec: &ReplaySpec) -> Result<FileCheck> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| io_error("open", path, source))?;
    lock_exclusively(&file, path)?;
    let scan = scan_file(&file, path, spec, &mut |_| {})?;
    if let Some(damage) = &scan.damage {
        file.set_len(damage.offset)
            .map_err(|source| io_error("truncate the damaged tail of", path, source))?;
        file.sync_all()
            .map_err(|source| io_error("fsync", path, source))?;
    }
    Ok(FileCheck {
        path: path.to_path_buf(),
        file_bytes: scan.file_len,
        intact_episodes: scan.episodes_in_file,
        intact_transitions: scan.transitions_in_file,
        damage: scan.damage.map(|damage| damage.into_dropped(scan.file_len)),
    })
}

/// Length of the header written for `spec` (tests compute record offsets from it).
#[cfg(test)]
pub(crate) fn encode_header_len_for_tests(spec: &ReplaySpec) -> u64 {
    encode_header(spec).len() as u64
}

/// Writes the header and one record per episode through a buffer; returns the bytes written.
fn write_header_and_records<'a>(
    file: &File,
    path: &Path,
    spec: &ReplaySpec,
    episodes: impl Iterator<Item = &'a Episode>,
) -> Result<u64> {
    let mut writer = BufWriter::new(file);
    let header = encode_header(spec);
    writer
        .write_all(&header)
        .map_err(|source| io_error("write", path, source))?;
    let mut len = header.len() as u64;
    for episode in episodes {
        let record = encode_episode_record(spec, episode)?;
        writer
            .write_all(&record)
            .map_err(|source| io_error("write", path, source))?;
        len += record.len() as u64;
    }
    writer
        .flush()
        .map_err(|source| io_error("write", path, source))?;
    Ok(len)
}

/// Size in bytes of the record for an episode of `transitions` transitions.
pub(crate) fn episode_record_bytes(spec: &ReplaySpec, transitions: usize) -> u64 {
    RECORD_HEADER_BYTES + episode_payload_bytes(spec, transitions)
}

fn episode_payload_bytes(spec: &ReplaySpec, transitions: usize) -> u64 {
    let transitions = transitions as u64;
    let values = (transitions + 1) * spec.obs_dim as u64
        + transitions * spec.action_width() as u64
        + transitions;
    EPISODE_PAYLOAD_FIXED_BYTES + 4 * values
}

/// Whether `payload_bytes` is the payload size of an episode of at least one transition.
fn is_episode_payload_size(spec: &ReplaySpec, payload_bytes: u64) -> bool {
    let Some(value_bytes) = payload_bytes.checked_sub(EPISODE_PAYLOAD_FIXED_BYTES) else {
        return false;
    };
    // values = (T+1)*D + T*A + T = D + T*(D + A + 1)
    let per_transition = (spec.obs_dim + spec.action_width() + 1) as u64;
    let Some(transition_values) = (value_bytes / 4).checked_sub(spec.obs_dim as u64) else {
        return false;
    };
    value_bytes % 4 == 0 && transition_values > 0 && transition_values % per_transition == 0
}

/// Checks that `episode` can be written as a record (its payload fits a u32 length).
pub(crate) fn check_episode_fits_record(spec: &ReplaySpec, episode: &Episode) -> Result<()> {
    let payload_bytes = episode_payload_bytes(spec, episode.len());
    if payload_bytes > u64::from(u32::MAX) {
        return Err(ReplayError::EpisodeTooLargeForFile {
            episode_transitions: episode.len(),
            payload_bytes,
            max_payload_bytes: u64::from(u32::MAX),
        });
    }
    Ok(())
}

fn encode_episode_record(spec: &ReplaySpec, episode: &Episode) -> Result<Vec<u8>> {
    check_episode_fits_record(spec, episode)?;
    let payload_bytes = episode_payload_bytes(spec, episode.len());
    let mut record = Vec::with_capacity((RECORD_HEADER_BYTES + payload_bytes) as usize);
    record.extend_from_slice(&EPISODE_RECORD_TAG.to_le_bytes());
    record.extend_from_slice(&(payload_bytes as u32).to_le_bytes());
    record.extend_from_slice(&[0; 4]); // CRC placeholder, filled below
    // T fits in u32 because the payload (at least 4*T bytes) does.
    record.extend_from_slice(&(episode.len() as u32).to_le_bytes());
    let mut flags = 0u32;
    if episode.terminated {
        flags |= FLAG_TERMINATED;
    }
    if episode.truncated {
        flags |= FLAG_TRUNCATED;
    }
    record.extend_from_slice(&flags.to_le_bytes());
    for value in episode
        .obs
        .iter()
        .chain(&episode.actions)
        .chain(&episode.rewards)
    {
        record.extend_from_slice(&value.to_le_bytes());
    }
    debug_assert_eq!(record.len() as u64, RECORD_HEADER_BYTES + payload_bytes);
    let crc = record_crc(&record[0..8], &record[12..]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}

fn record_crc(tag_and_len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(tag_and_len);
    hasher.update(payload);
    hasher.finalize()
}

/// Why a record was rejected.
#[derive(Debug)]
struct RecordDamage {
    /// What is wrong, naming the episode index.
    reason: String,
    /// The record is incomplete at the end of the file with a plausible header (an append
    /// cut short), rather than corrupt.
    torn: bool,
}

/// Reads the record at `offset`. The outer `Result` is an I/O failure; the inner `Err`
/// is damage (a reason naming `episode_index`) that `RecoverPrefix` may cut off.
fn read_episode_record(
    reader: &mut impl Read,
    path: &Path,
    spec: &ReplaySpec,
    offset: u64,
    file_len: u64,
    episode_index: usize,
) -> Result<std::result::Result<(Episode, u64), RecordDamage>> {
    let corrupt = |reason: String| {
        Ok(Err(RecordDamage {
            reason,
            torn: false,
        }))
    };
    let remaining = file_len - offset;
    if remaining < RECORD_HEADER_BYTES {
        return Ok(Err(RecordDamage {
            reason: format!(
                "truncated record (episode {episode_index}): a record header needs {RECORD_HEADER_BYTES} bytes, \
                 only {remaining} remain"
            ),
            torn: true,
        }));
    }
    let mut record_header = [0u8; RECORD_HEADER_BYTES as usize];
    read_exactly(reader, &mut record_header, path)?;
    let tag = u32_at(&record_header, 0);
    let payload_len = u32_at(&record_header, 4);
    let stored_crc = u32_at(&record_header, 8);
    let payload_remaining = remaining - RECORD_HEADER_BYTES;
    if u64::from(payload_len) > payload_remaining {
        // An append cut short leaves a valid header announcing a size some episode can have;
        // a damaged length field almost never does.
        let torn =
            tag == EPISODE_RECORD_TAG && is_episode_payload_size(spec, u64::from(payload_len));
        return Ok(Err(RecordDamage {
            reason: format!(
                "truncated record (episode {episode_index}): the record announces {payload_len} payload bytes, \
                 only {payload_remaining} remain"
            ),
            torn,
        }));
    }
    let mut payload = vec![0u8; payload_len as usize];
    read_exactly(reader, &mut payload, path)?;
    if record_crc(&record_header[0..8], &payload) != stored_crc {
        return corrupt(format!(
            "record checksum mismatch (episode {episode_index})"
        ));
    }
    if tag != EPISODE_RECORD_TAG {
        return corrupt(format!(
            "unknown record tag {tag} (episode {episode_index}); format version {FORMAT_VERSION} only has \
             tag {EPISODE_RECORD_TAG} (episode)"
        ));
    }
    let episode = match decode_episode_payload(spec, &payload) {
        Ok(episode) => episode,
        Err(problem) => {
            return corrupt(format!(
                "malformed episode record (episode {episode_index}): {problem}"
            ));
        }
    };
    Ok(Ok((episode, RECORD_HEADER_BYTES + u64::from(payload_len))))
}

fn decode_episode_payload(
    spec: &ReplaySpec,
    payload: &[u8],
) -> std::result::Result<Episode, String> {
    if (payload.len() as u64) < EPISODE_PAYLOAD_FIXED_BYTES {
        return Err(format!(
            "payload has {} bytes, fewer than the {EPISODE_PAYLOAD_FIXED_BYTES}-byte minimum",
            payload.len()
        ));
    }
    let transitions = u32_at(payload, 0) as usize;
    let flags = u32_at(payload, 4);
    let expected_bytes = episode_payload_bytes(spec, transitions);
    if payload.len() as u64 != expected_bytes {
        return Err(format!(
            "payload has {} bytes, but {transitions} transitions need {expected_bytes}",
            payload.len()
        ));
    }
    if flags & !(FLAG_TERMINATED | FLAG_TRUNCATED) != 0 {
        return Err(format!("unknown flag bits {flags:#x}"));
    }
    let mut values = payload[EPISODE_PAYLOAD_FIXED_BYTES as usize..]
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
    let obs: Vec<f32> = values
        .by_ref()
        .take((transitions + 1) * spec.obs_dim)
        .collect();
    let actions: Vec<f32> = values
        .by_ref()
        .take(transitions * spec.action_width())
        .collect();
    let rewards: Vec<f32> = values.collect();
    let episode = Episode {
        obs,
        actions,
        rewards,
        terminated: flags & FLAG_TERMINATED != 0,
        truncated: flags & FLAG_TRUNCATED != 0,
    };
    episode.validate(spec).map_err(|error| error.to_string())?;
    Ok(episode)
}

fn encode_header(spec: &ReplaySpec) -> Vec<u8> {
    let spec_json = spec_to_json(spec);
    let mut header = Vec::with_capacity(HEADER_FIXED_BYTES as usize + spec_json.len() + 4);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&(spec_json.len() as u32).to_le_bytes());
    header.extend_from_slice(spec_json.as_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

/// Reads and checks the header; returns its length (the offset of the first record).
fn read_and_check_header(
    reader: &mut impl Read,
    path: &Path,
    spec: &ReplaySpec,
    file_len: u64,
) -> Result<u64> {
    let bad_header = |offset: u64, reason: String| ReplayError::BadHeader {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let minimum_len = HEADER_FIXED_BYTES + 4;
    if file_len < minimum_len {
        return Err(bad_header(
            file_len,
            format!(
                "the file has {file_len} bytes, fewer than the {minimum_len}-byte minimum header"
            ),
        ));
    }
    let mut fixed = [0u8; HEADER_FIXED_BYTES as usize];
    read_exactly(reader, &mut fixed, path)?;
    if fixed[0..8] != MAGIC {
        return Err(bad_header(
            0,
            format!(
                "magic bytes are {:02X?}, expected {:02X?} (not a wm-replay file)",
                &fixed[0..8],
                MAGIC
            ),
        ));
    }
    let version = u32_at(&fixed, 8);
    if version != FORMAT_VERSION {
        return Err(ReplayError::UnsupportedVersion {
            path: path.to_path_buf(),
            found_version: version,
            supported_version: FORMAT_VERSION,
        });
    }
    let spec_len = u64::from(u32_at(&fixed, 12));
    let header_len = HEADER_FIXED_BYTES + spec_len + 4;
    if header_len > file_len {
        return Err(bad_header(
            12,
            format!(
                "the header announces a {spec_len}-byte spec, but the file has only {file_len} bytes"
            ),
        ));
    }
    let mut spec_bytes = vec![0u8; spec_len as usize];
    read_exactly(reader, &mut spec_bytes, path)?;
    let mut crc_bytes = [0u8; 4];
    read_exactly(reader, &mut crc_bytes, path)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&fixed);
    hasher.update(&spec_bytes);
    if hasher.finalize() != u32::from_le_bytes(crc_bytes) {
        return Err(bad_header(
            HEADER_FIXED_BYTES + spec_len,
            "header checksum mismatch".to_string(),
        ));
    }
    let file_spec: SpecOnDisk = std::str::from_utf8(&spec_bytes)
        .map_err(|error| error.to_string())
        .and_then(|text| serde_json::from_str(text).map_err(|error| error.to_string()))
        .map_err(|problem| {
            bad_header(
                HEADER_FIXED_BYTES,
                format!("the spec JSON does not parse: {problem}"),
            )
        })?;
    let requested_spec = SpecOnDisk::from_spec(spec);
    if file_spec != requested_spec {
        return Err(ReplayError::SpecMismatch {
            path: path.to_path_buf(),
            file_spec: String::from_utf8_lossy(&spec_bytes).into_owned(),
            requested_spec: spec_to_json(spec),
        });
    }
    Ok(header_len)
}

/// The spec as stored in the header. Kept separate from `wm_envs::Space` so the file
/// format does not change when that type's serde representation does, and so that
/// infinite bounds (which JSON cannot express as numbers) survive.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SpecOnDisk {
    obs_dim: usize,
    action_space: ActionSpaceOnDisk,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum ActionSpaceOnDisk {
    Box {
        low: Vec<BoundOnDisk>,
        high: Vec<BoundOnDisk>,
    },
    Discrete {
        n: usize,
    },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum BoundOnDisk {
    Finite(f32),
    /// "inf", "-inf" or "NaN"; compared as strings, so NaN bounds match each other.
    NonFinite(String),
}

impl BoundOnDisk {
    fn from_f32(value: f32) -> Self {
        if value.is_finite() {
            BoundOnDisk::Finite(value)
        } else {
            BoundOnDisk::NonFinite(value.to_string())
        }
    }
}

impl SpecOnDisk {
    fn from_spec(spec: &ReplaySpec) -> Self {
        let action_space = match &spec.action_space {
            Space::Box { low, high } => ActionSpaceOnDisk::Box {
                low: low.iter().copied().map(BoundOnDisk::from_f32).collect(),
                high: high.iter().copied().map(BoundOnDisk::from_f32).collect(),
            },
            Space::Discrete { n } => ActionSpaceOnDisk::Discrete { n: *n },
        };
        Self {
            obs_dim: spec.obs_dim,
            action_space,
        }
    }
}

/// The spec as the compact JSON written in file headers and error messages.
pub(crate) fn spec_to_json(spec: &ReplaySpec) -> String {
    serde_json::to_string(&SpecOnDisk::from_spec(spec))
        .expect("serialising plain structs of numbers and strings to JSON should never fail")
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

fn read_exactly(reader: &mut impl Read, buffer: &mut [u8], path: &Path) -> Result<()> {
    // Callers check the length against the file size first, so an early end of file here
    // means the file shrank while being read: an I/O problem, not damage to recover from.
    reader
        .read_exact(buffer)
        .map_err(|source| io_error("read", path, source))
}

fn lock_exclusively(file: &File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(ReplayError::FileLocked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(io_error("lock", path, source)),
    }
}

fn temporary_path_for(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

/// fsyncs the folder so the rename itself survives a crash (POSIX needs this; other
/// systems cannot open folders as files and do not need it).
fn sync_parent_folder(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)
            .and_then(|folder| folder.sync_all())
            .map_err(|source| io_error("fsync the folder of", path, source))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> ReplayError {
    ReplayError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pendulum_like_spec() -> ReplaySpec {
        ReplaySpec::new(
            3,
            Space::Box {
                low: vec![-2.0],
                high: vec![2.0],
            },
        )
    }

    fn sample_episode() -> Episode {
        Episode {
            obs: vec![0.0, 0.1, 0.2, 1.0, 1.1, 1.2, 2.0, 2.1, 2.2],
            actions: vec![0.5, -1.5],
            rewards: vec![-1.0, -0.25],
            terminated: false,
            truncated: true,
        }
    }

    #[test]
    fn episode_record_round_trips_through_encoding() {
        let spec = pendulum_like_spec();
        let episode = sample_episode();
        let record = encode_episode_record(&spec, &episode).expect("small episode");
        assert_eq!(
            record.len() as u64,
            episode_record_bytes(&spec, episode.len())
        );
        let mut reader = &record[..];
        let (decoded, record_len) = read_episode_record(
            &mut reader,
            Path::new("mem"),
            &spec,
            0,
            record.len() as u64,
            0,
        )
        .expect("no I/O error")
        .expect("intact record");
        assert_eq!(decoded, episode);
        assert_eq!(record_len, record.len() as u64);
    }

    #[test]
    fn record_layout_matches_the_documented_format() {
        let spec = pendulum_like_spec();
        let record = encode_episode_record(&spec, &sample_episode()).expect("small episode");
        // payload = 8 + 4 * ((2+1)*3 + 2*1 + 2) = 60
        assert_eq!(u32_at(&record, 0), EPISODE_RECORD_TAG);
        assert_eq!(u32_at(&record, 4), 60);
        assert_eq!(u32_at(&record, 12), 2, "T");
        assert_eq!(u32_at(&record, 16), FLAG_TRUNCATED, "flags");
        assert_eq!(
            f32::from_le_bytes(record[20..24].try_into().expect("4 bytes")),
            0.0
        );
        assert_eq!(
            f32::from_le_bytes(record[24..28].try_into().expect("4 bytes")),
            0.1
        );
        assert_eq!(record.len(), 72);
    }

    #[test]
    fn header_layout_matches_the_documented_format() {
        let spec = ReplaySpec::new(4, Space::Discrete { n: 2 });
        let header = encode_header(&spec);
        let json = r#"{"obs_dim":4,"action_space":{"Discrete":{"n":2}}}"#;
        assert_eq!(&header[0..8], b"WMRB\r\n\x1a\n");
        assert_eq!(u32_at(&header, 8), 1);
        assert_eq!(u32_at(&header, 12) as usize, json.len());
        assert_eq!(&header[16..16 + json.len()], json.as_bytes());
        assert_eq!(
            u32_at(&header, 16 + json.len()),
            crc32fast::hash(&header[..16 + json.len()])
        );
    }

    #[test]
    fn infinite_bounds_survive_the_spec_json() {
        let spec = ReplaySpec::new(
            2,
            Space::Box {
                low: vec![f32::NEG_INFINITY, -1.5],
                high: vec![f32::INFINITY, 0.1],
            },
        );
        let json = spec_to_json(&spec);
        let parsed: SpecOnDisk = serde_json::from_str(&json).expect("own output parses");
        assert_eq!(parsed, SpecOnDisk::from_spec(&spec), "{json}");
    }
}
