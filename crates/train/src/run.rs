//! Run folders: `runs/{env}__{model}__{seed}__{unixtime}/` and the files inside.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The files of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFolder {
    /// The folder itself (TensorBoard event files are written directly in it).
    pub dir: PathBuf,
}

impl RunFolder {
    /// Creates a new, uniquely named run folder under `runs_dir`.
    pub fn create(runs_dir: &Path, env: &str, model: &str, seed: u64) -> std::io::Result<Self> {
        let unixtime = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let base = format!("{env}__{model}__{seed}__{unixtime}");
        std::fs::create_dir_all(runs_dir)?;
        for attempt in 0u32.. {
            let name = if attempt == 0 { base.clone() } else { format!("{base}_{attempt}") };
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
        Self { dir: dir.to_path_buf() }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_folders_are_named_for_humans_and_never_collide() {
        let runs = tempfile::tempdir().expect("temp dir");
        let first = RunFolder::create(runs.path(), "cartpole", "cvae", 7).expect("create");
        let second = RunFolder::create(runs.path(), "cartpole", "cvae", 7).expect("create");
        let name = first.dir.file_name().and_then(|n| n.to_str()).expect("utf-8 name").to_string();
        assert!(name.starts_with("cartpole__cvae__7__"), "{name}");
        assert_ne!(first.dir, second.dir);
    }
}
