//! `wm replay check` and `wm replay recover`: a run's replay files, read or cut at their first
//! damaged record.

use std::path::Path;

use anyhow::Context;
use wm_replay::{FileCheck, ReplaySpec};
use wm_train::TrainConfig;
use wm_train::run::RunFolder;

use crate::cli::ReplayArgs;

/// The replay files of the run and their spec (from the run's config).
fn replay_files(run_dir: &Path) -> anyhow::Result<(ReplaySpec, Vec<std::path::PathBuf>)> {
    let run = RunFolder::open(run_dir);
    let config = TrainConfig::load(&run.config(), &[])
        .with_context(|| format!("reading the config of run {}", run_dir.display()))?;
    let env = wm_envs::make(&config.env)?;
    let spec = wm_train::data::replay_spec(env.as_ref());
    let files: Vec<_> = [run.train_replay(), run.eval_replay()]
        .into_iter()
        .filter(|path| path.exists())
        .collect();
    anyhow::ensure!(
        !files.is_empty(),
        "run {} has no replay file ({} or {})",
        run_dir.display(),
        run.train_replay().display(),
        run.eval_replay().display()
    );
    Ok((spec, files))
}

pub fn check(args: &ReplayArgs) -> anyhow::Result<()> {
    let (spec, files) = replay_files(&args.run)?;
    let mut corrupt = Vec::new();
    for path in files {
        let check = wm_replay::check_file(&path, &spec)?;
        println!("{check}");
        if check.damage.as_ref().is_some_and(|damage| !damage.torn) {
            corrupt.push(check);
        }
    }
    if corrupt.is_empty() {
        return Ok(());
    }
    let kept: Vec<String> = corrupt
        .iter()
        .map(|c| {
            format!(
                "{} ({} intact episodes)",
                c.path.display(),
                c.intact_episodes
            )
        })
        .collect();
    anyhow::bail!(
        "corrupt replay: {}; `wm replay recover {}` keeps the intact episodes and cuts the rest",
        kept.join(", "),
        args.run.display()
    )
}

pub fn recover(args: &ReplayArgs) -> anyhow::Result<()> {
    let (spec, files) = replay_files(&args.run)?;
    for path in files {
        let check: FileCheck = wm_replay::recover_file(&path, &spec)
            .with_context(|| format!("recovering {}", path.display()))?;
        match &check.damage {
            None => println!(
                "{}: intact, {} episodes ({} transitions), unchanged",
                path.display(),
                check.intact_episodes,
                check.intact_transitions
            ),
            Some(damage) => println!(
                "{}: kept {} episodes ({} transitions), cut {} bytes from byte {} ({})",
                path.display(),
                check.intact_episodes,
                check.intact_transitions,
                damage.bytes,
                damage.offset,
                damage.reason
            ),
        }
    }
    Ok(())
}
