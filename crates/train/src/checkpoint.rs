//! Checkpoints: the model's parameters, the optimiser's state and everything needed to resume,
//! in one checksummed file written atomically (a temporary file in the same folder, fsync, then a
//! rename), so that a crash or kill mid-write leaves the previous checkpoint intact.
//!
//! # File format (little-endian)
//! | bytes | content |
//! |---|---|
//! | 8 | magic `WMCKPT` followed by the format version as `u16` (currently 1) |
//! | 8 | `meta_len`: length of the metadata JSON |
//! | 8 | `model_len`: length of the model record (burnpack bytes from `Module::into_record`) |
//! | 8 | `optimizer_len`: length of the optimiser record (burnpack bytes) |
//! | 4 | CRC-32 of everything after this field |
//! | `meta_len` | [`CheckpointMeta`] as JSON |
//! | `model_len` | model record |
//! | `optimizer_len` | optimiser record |
//!
//! The records are backend-independent: a checkpoint written on one device loads on any other.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 6] = b"WMCKPT";
const FORMAT_VERSION: u16 = 1;
const HEADER_LEN: usize = 8 + 8 + 8 + 8 + 4;

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
}

/// Everything in a checkpoint besides the tensor records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Gradient updates done.
    pub update: u64,
    /// Environment steps inserted into the training replay (prefill included).
    #[serde(default)]
    pub env_steps: u64,
    /// The model kind (`cvae`, `gaussian_mlp`, ...), checked on load.
    pub model_kind: String,
    /// The resolved training config, as RON.
    pub config_ron: String,
    /// The model's host-side state (normaliser, fitted residual variance, ...) as JSON.
    pub model_state: serde_json::Value,
    /// The sampling RNG's state, so that a resumed run draws the batches it would have drawn.
    pub rng_state: serde_json::Value,
    /// The version of worldmodel that wrote it.
    pub writer_version: String,
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
}

impl Checkpoint {
    /// Writes the checkpoint to `path` atomically: a temporary file beside it, fsync, rename.
    pub fn save_atomic(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |operation: &'static str| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, operation, source }
        };
        let meta = serde_json::to_vec(&self.meta).expect("checkpoint metadata should serialise");
        let mut body = Vec::with_capacity(meta.len() + self.model_bytes.len() + self.optimizer_bytes.len());
        body.extend_from_slice(&meta);
        body.extend_from_slice(&self.model_bytes);
        body.extend_from_slice(&self.optimizer_bytes);

        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for len in [meta.len(), self.model_bytes.len(), self.optimizer_bytes.len()] {
            header.extend_from_slice(&(len as u64).to_le_bytes());
        }
        header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());

        let temporary = path.with_extension("tmp");
        let mut file = File::create(&temporary).map_err(io("create temporary file"))?;
        file.write_all(&header).map_err(io("write"))?;
        file.write_all(&body).map_err(io("write"))?;
        file.sync_all().map_err(io("fsync"))?;
        drop(file);
        std::fs::rename(&temporary, path).map_err(io("rename temporary file"))?;
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
    /// [`CheckpointError::Corrupt`] for a wrong magic or version, a truncated file or a checksum
    /// mismatch; never panics on bad bytes.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            operation: "read",
            source,
        })?;
        let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!("{} bytes is shorter than the {HEADER_LEN}-byte header", bytes.len())));
        }
        if &bytes[..6] != MAGIC {
            return Err(corrupt("not a worldmodel checkpoint (bad magic bytes)".into()));
        }
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        if version != FORMAT_VERSION {
            return Err(corrupt(format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        let read_u64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let lens = [read_u64(8), read_u64(16), read_u64(24)];
        let stored_crc = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
        let body = &bytes[HEADER_LEN..];
        let expected_len = lens.iter().try_fold(0u64, |sum, &len| sum.checked_add(len));
        if expected_len != Some(body.len() as u64) {
            return Err(corrupt(format!(
                "the header announces {} body bytes (meta {}, model {}, optimiser {}) but the file has {} after the header",
                lens.iter().map(|&l| l as u128).sum::<u128>(),
                lens[0],
                lens[1],
                lens[2],
                body.len()
            )));
        }
        let actual_crc = crc32fast::hash(body);
        if actual_crc != stored_crc {
            return Err(corrupt(format!("checksum mismatch (stored {stored_crc:#010x}, computed {actual_crc:#010x})")));
        }
        let (meta_len, model_len) = (lens[0] as usize, lens[1] as usize);
        let meta: CheckpointMeta = serde_json::from_slice(&body[..meta_len])
            .map_err(|error| corrupt(format!("metadata at byte {HEADER_LEN} is not valid: {error}")))?;
        Ok(Self {
            meta,
            model_bytes: body[meta_len..meta_len + model_len].to_vec(),
            optimizer_bytes: body[meta_len + model_len..].to_vec(),
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
                model_kind: "cvae".into(),
                config_ron: "(env: \"cartpole\")".into(),
                model_state: serde_json::json!({"obs_mean": [0.0, 1.0]}),
                rng_state: serde_json::json!([1, 2, 3]),
                writer_version: "test".into(),
            },
            model_bytes: (0..=255).collect(),
            optimizer_bytes: vec![7; 33],
        }
    }

    #[test]
    fn save_then_load_gives_the_same_checkpoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.wmck");
        sample().save_atomic(&path).expect("save");
        assert_eq!(Checkpoint::load(&path).expect("load"), sample());
        assert!(!path.with_extension("tmp").exists(), "the temporary file should be renamed away");
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
        assert!(message.contains("corrupt") && message.contains("checksum mismatch"), "{message}");
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
            assert!(matches!(error, CheckpointError::Corrupt { .. }), "cut at {cut}: {error}");
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
