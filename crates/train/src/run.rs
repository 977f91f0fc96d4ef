//! Run folders: `runs/{env}__{model}__{seed}__{unixtime}/` and the files inside, and how the
//! trainer (read-write, locked) and evaluation (read-only, unlocked) open its replay files.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use wm_replay::{LoadMode, LoadReport, ReplayBuffer, ReplayError, ReplaySpec};

/// The files of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFolder {
    /// The folder itself (TensorBoard event files are written directly in it).
    pub dir: PathBuf,
}

impl RunFolder {
    /// Creates a new, uniquely named run folder under `runs_dir`.
    pub fn create(runs_dir: &Path, env: &str, model: &str, seed: u64) -> std::io::Result<Self> {
        let unixtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!("{env}__{model}__{seed}__{unixtime}");
        std::fs::create_dir_all(runs_dir)?;
        for attempt in 0u32.. {
            let name = if attempt == 0 {
                base.clone()
            } else {
                format!("{base}_{attempt}")
            };
            let dir = runs_dir.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Self { dir }),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
        unreachable!("some suffix is always free")
    }

    /// An existing run folder.
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The resolved config (RON).
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.ron")
    }
    /// The latest checkpoint.
    pub fn checkpoint(&self) -> PathBuf {
        crate::checkpoint::checkpoint_path(&self.dir)
    }
    /// The actor-critic's checkpoint (runs whose acting policy is the actor).
    pub fn agent_checkpoint(&self) -> PathBuf {
        self.dir.join("agent.wmck")
    }
    /// The training episodes.
    pub fn train_replay(&self) -> PathBuf {
        self.dir.join("replay_train.wmrb")
    }
    /// The held-out evaluation episodes.
    pub fn eval_replay(&self) -> PathBuf {
        self.dir.join("replay_eval.wmrb")
    }
    /// The final metrics.
    pub fn eval_json(&self) -> PathBuf {
        self.dir.join("eval.json")
    }
    /// The imagined-versus-real plot.
    pub fn plot_png(&self) -> PathBuf {
        self.dir.join("open_loop.png")
    }
}

/// Opens a run's replay file for writing (created if missing). A torn final record (an append
/// cut short by a kill or a full disk) is cut off by the replay crate; this says so on stderr,
/// naming the bytes dropped, so that nothing disappears silently.
pub fn open_replay(
    path: &Path,
    spec: ReplaySpec,
    capacity: usize,
) -> Result<ReplayBuffer, ReplayError> {
    let (buffer, report) = ReplayBuffer::open(path, spec, capacity, LoadMode::Strict)?;
    warn_about_dropped_tail(&report);
    Ok(buffer)
}

/// Opens a run's replay file read-only, without its lock (evaluation and plots: on read-only
/// folders, beside a running `wm train`, the same run twice). A torn final record is left out
/// with a warning on stderr; a missing file or corruption is an error.
pub fn open_replay_read_only(
    path: &Path,
    spec: ReplaySpec,
    capacity: usize,
) -> Result<ReplayBuffer, ReplayError> {
    let (buffer, report) = ReplayBuffer::open_read_only(path, spec, capacity, LoadMode::Strict)?;
    warn_about_dropped_tail(&report);
    Ok(buffer)
}

fn warn_about_dropped_tail(report: &LoadReport) {
    if let Some(dropped) = &report.dropped_tail {
        let action = if report.read_only {
            "left out"
        } else {
            "cut off"
        };
        eprintln!(
            "warning: {}: {action} {} bytes from byte {} ({}); the {} intact episodes ({} transitions) before them are kept",
            report.path.display(),
            dropped.bytes,
            dropped.offset,
            dropped.reason,
            report.episodes_in_file,
            report.transitions_in_file
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_folders_are_named_for_humans_and_never_collide() {
        let runs = tempfile::tempdir().expect("temp dir");
        let first = RunFolder::create(runs.path(), "cartpole", "cvae", 7).expect("create");
        let second = RunFolder::create(runs.path(), "cartpole", "cvae", 7).expect("create");
        let name = first
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        assert!(name.starts_with("cartpole__cvae__7__"), "{name}");
        assert_ne!(first.dir, second.dir);
    }
}
