//! Checkpoints: everything needed to resume a run, in **one** checksummed file written
//! atomically (a temporary file in the same folder, fsync, then a rename; a failed write removes
//! its temporary file), so that a crash or kill mid-write leaves the previous checkpoint intact:
//! the model's parameters and host-side state, the optimiser, the actor-critic (networks,
//! optimiser and return normaliser) when the run has one, and the batch sampler's RNG.
//!
//! # File format (little-endian), version 2
//! | bytes | content |
//! |---|---|
//! | 8 | magic `WMCKPT` followed by the format version as `u16` (currently 2) |
//! | 8 x 5 | lengths of the five sections below |
//! | 4 | CRC-32 of everything after this field |
//! | `meta_len` | [`CheckpointMeta`] as JSON |
//! | `model_len` | model record (burnpack bytes from `Module::into_record`) |
//! | `optimizer_len` | optimiser record (burnpack bytes) |
//! | `agent_nets_len` | the actor-critic's networks (empty without an actor-critic) |
//! | `agent_optimizer_len` | the actor-critic's optimiser (empty without an actor-critic) |
//!
//! The records are backend-independent: a checkpoint written on one device loads on any other.
//! Format 1 (before the actor-critic moved in from `agent.wmck`) is recognised and refused with
//! a message saying what to do.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::ModelState;

const MAGIC: &[u8; 6] = b"WMCKPT";
const FORMAT_VERSION: u16 = 2;
const N_SECTIONS: usize = 5;
const HEADER_LEN: usize = 8 + 8 * N_SECTIONS + 4;

/// Errors reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O error on the file.
    #[error("checkpoint {path}: {operation} failed: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint, is truncated, or fails its checksum.
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong, with the offsets or values.
        reason: String,
    },
    /// The file is a checkpoint of an older format this build does not read.
    #[error(
        "checkpoint {path} has format {version}, written by an older worldmodel (the actor-critic was saved apart, in \
         agent.wmck); this build reads format 2 and cannot continue or evaluate that run: train it again \
         with `wm train --config <run>/config.ron`, or use the worldmodel version that wrote it"
    )]
    OldFormat {
        /// The checkpoint file.
        path: PathBuf,
        /// Its format version.
        version: u16,
    },
}

/// The batch sampler's ChaCha8 state: seed, stream and word position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed.
    pub seed: [u8; 32],
    /// The stream.
    pub stream: u64,
    /// The word position (a `u128`, written as decimal text because JSON numbers are not).
    pub word_pos: String,
}

impl RngState {
    /// The state of `rng`.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// The generator in this state, or `None` if the word position is not a number.
    pub fn restore(&self) -> Option<ChaCha8Rng> {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse().ok()?);
        Some(rng)
    }
}

/// Everything in a checkpoint besides the tensor records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    /// Gradient updates done.
    pub update: u64,
    /// Environment steps inserted into the training replay (prefill included).
    pub env_steps: u64,
    /// Updates skipped so far because their loss or gradient norm was not finite.
    pub nonfinite_updates: u64,
    /// The model kind (`cvae`, `gaussian_mlp`, ...), checked on load.
    pub model_kind: String,
    /// The resolved training config, as RON.
    pub config_ron: String,
    /// The model's host-side state (spec, normaliser, fitted residual variance).
    pub model_state: ModelState,
    /// The sampling RNG's state, so that a resumed run draws the batches it would have drawn.
    pub rng: RngState,
    /// The actor-critic's host-side state (return normaliser, update count), when the run has
    /// one; its records are the agent sections of the file.
    pub agent_state: Option<serde_json::Value>,
    /// The version of worldmodel that wrote it.
    pub writer_version: String,
}

/// The actor-critic's records in a checkpoint.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentRecords {
    /// The actor, critic and slow critic (burnpack bytes).
    pub nets: Vec<u8>,
    /// Their optimiser (burnpack bytes).
    pub optimizer: Vec<u8>,
}

/// A checkpoint in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Step, config and host-side state.
    pub meta: CheckpointMeta,
    /// The model record (burnpack bytes).
    pub model_bytes: Vec<u8>,
    /// The optimiser record (burnpack bytes).
    pub optimizer_bytes: Vec<u8>,
    /// The actor-critic's records (empty when `meta.agent_state` is `None`).
    pub agent: AgentRecords,
}

impl Checkpoint {
    /// Writes the checkpoint to `path` atomically: a temporary file beside it, fsync, rename.
    /// A failed write removes the temporary file (on a full disk it would keep the disk full).
    pub fn save_atomic(&self, path: &Path) -> Result<(), CheckpointError> {
        let temporary = path.with_extension("tmp");
        let result = self.write_then_rename(path, &temporary);
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }

    fn write_then_rename(&self, path: &Path, temporary: &Path) -> Result<(), CheckpointError> {
        let io = |operation: &'static str| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io {
                path,
                operation,
                source,
            }
        };
        let meta = serde_json::to_vec(&self.meta)
            .expect("checkpoint metadata has string keys only and should serialise");
        let sections: [&[u8]; N_SECTIONS] = [
            &meta,
            &self.model_bytes,
            &self.optimizer_bytes,
            &self.agent.nets,
            &self.agent.optimizer,
        ];
        let mut body = Vec::with_capacity(sections.iter().map(|s| s.len()).sum());
        for section in sections {
            body.extend_from_slice(section);
        }
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for section in sections {
            header.extend_from_slice(&(section.len() as u64).to_le_bytes());
        }
        header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());

        let mut file = File::create(temporary).map_err(io("create temporary file"))?;
        file.write_all(&header).map_err(io("write"))?;
        file.write_all(&body).map_err(io("write"))?;
        file.sync_all().map_err(io("fsync"))?;
        drop(file);
        std::fs::rename(temporary, path).map_err(io("rename temporary file"))?;
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Makes the rename itself durable; not all platforms can open a folder, so best effort.
            if let Ok(dir) = File::open(folder) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    /// Reads and verifies a checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError::Corrupt`] for a wrong magic, a truncated file or a checksum mismatch,
    /// [`CheckpointError::OldFormat`] for a checkpoint of an older format; never panics on bad
    /// bytes.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            operation: "read",
            source,
        })?;
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < 8 {
            return Err(corrupt(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if &bytes[..6] != MAGIC {
            return Err(corrupt(
                "not a worldmodel checkpoint (bad magic bytes)".into(),
            ));
        }
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        if version == 1 {
            return Err(CheckpointError::OldFormat {
                path: path.to_path_buf(),
                version,
            });
        }
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let read_u64 = |at: usize| {
            u64::from_le_bytes(
                bytes[at..at + 8]
                    .try_into()
                    .expect("8 bytes, inside the header"),
            )
        };
        let lens: Vec<u64> = (0..N_SECTIONS).map(|i| read_u64(8 + 8 * i)).collect();
        let crc_at = 8 + 8 * N_SECTIONS;
        let stored_crc = u32::from_le_bytes(
            bytes[crc_at..crc_at + 4]
                .try_into()
                .expect("4 bytes, inside the header"),
        );
        let body = &bytes[HEADER_LEN..];
        let expected_len = lens.iter().try_fold(0u64, |sum, &len| sum.checked_add(len));
        if expected_len != Some(body.len() as u64) {
            return Err(corrupt(format!(
                "the header announces {} body bytes (sections {lens:?}) but the file has {} after the header",
                lens.iter().map(|&l| u128::from(l)).sum::<u128>(),
                body.len()
            )));
        }
        let actual_crc = crc32fast::hash(body);
        if actual_crc != stored_crc {
            return Err(corrupt(format!(
                "checksum mismatch (stored {stored_crc:#010x}, computed {actual_crc:#010x})"
            )));
        }
        let mut sections = Vec::with_capacity(N_SECTIONS);
        let mut start = 0usize;
        for &len in &lens {
            sections.push(&body[start..start + len as usize]);
            start += len as usize;
        }
        let meta: CheckpointMeta = serde_json::from_slice(sections[0]).map_err(|error| {
            corrupt(format!(
                "metadata at byte {HEADER_LEN} is not valid: {error}"
            ))
        })?;
        Ok(Self {
            meta,
            model_bytes: sections[1].to_vec(),
            optimizer_bytes: sections[2].to_vec(),
            agent: AgentRecords {
                nets: sections[3].to_vec(),
                optimizer: sections[4].to_vec(),
            },
        })
    }
}

/// The checkpoint file of a run folder.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.wmck")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            meta: CheckpointMeta {
                update: 42,
                env_steps: 4200,
                nonfinite_updates: 1,
                model_kind: "rssm_gaussian".into(),
                config_ron: "(env: \"cartpole\")".into(),
                model_state: ModelState::Rssm {
                    spec: wm_models::ModelSpec {
                        obs_dim: 4,
                        action: wm_models::ActionSpec::Discrete { n: 2 },
                    },
                },
                rng: RngState::of(&ChaCha8Rng::seed_from_u64(3)),
                agent_state: Some(serde_json::json!({"updates": 42})),
                writer_version: "test".into(),
            },
            model_bytes: (0..=255).collect(),
            optimizer_bytes: vec![7; 33],
            agent: AgentRecords {
                nets: vec![1, 2, 3],
                optimizer: vec![4; 9],
            },
        }
    }

    #[test]
    fn rng_state_round_trips_mid_stream() {
        use rand::RngCore;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        rng.next_u64();
        let mut restored = RngState::of(&rng).restore().expect("restore");
        assert_eq!(restored.next_u64(), rng.next_u64());
    }

    #[test]
    fn format_1_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.wmck");
        let mut bytes = b"WMCKPT".to_vec();
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&[0; 28]);
        std::fs::write(&path, bytes).expect("write");
        let message = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("format 1")
                && message.contains("agent.wmck")
                && message.contains("wm train --config"),
            "{message}"
        );
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The rename fails: the target is a non-empty folder.
        let path = dir.path().join("c.wmck");
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join("x"), b"x").expect("write");
        let error = sample().save_atomic(&path).unwrap_err();
        assert!(
            matches!(
                error,
                CheckpointError::Io {
                    operation: "rename temporary file",
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            !path.with_extension("tmp").exists(),
            "the temporary file was left behind"
        );
    }

    #[test]
    fn save_then_load_gives_the_same_checkpoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.wmck");
        sample().save_atomic(&path).expect("save");
        assert_eq!(Checkpoint::load(&path).expect("load"), sample());
        assert!(
            !path.with_extension("tmp").exists(),
            "the temporary file should be renamed away"
        );
    }

    #[test]
    fn flipped_byte_is_reported_as_checksum_mismatch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.wmck");
        sample().save_atomic(&path).expect("save");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let message = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("corrupt") && message.contains("checksum mismatch"),
            "{message}"
        );
    }

    #[test]
    fn truncated_file_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.wmck");
        sample().save_atomic(&path).expect("save");
        let bytes = std::fs::read(&path).expect("read");
        for cut in [0, 5, HEADER_LEN, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).expect("write");
            let error = Checkpoint::load(&path).unwrap_err();
            assert!(
                matches!(error, CheckpointError::Corrupt { .. }),
                "cut at {cut}: {error}"
            );
        }
    }

    #[test]
    fn other_file_is_not_a_checkpoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.wmck");
        std::fs::write(&path, vec![b'x'; 100]).expect("write");
        let message = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(message.contains("bad magic"), "{message}");
    }
}
