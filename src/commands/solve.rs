//! `wm bench solve`: closed-loop control over several seeds (see `wm_train::solve`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use wm_backend::DeviceSpec;
use wm_train::solve::{SeedCurve, SolveReport};
use wm_train::{TrainConfig, TrainOptions};

use crate::cli::BenchSolveArgs;

/// The planning issue's targets: `(default config, target return, budget in env steps)`. The
/// defaults are the configs that reached the targets when measured (BENCHMARKS.md): CEM over a
/// cVAE on Pendulum, the actor-critic over a cVAE on CartPole (CEM's 25-step horizon cannot see
/// the cart drifting off the track; the critic's values reach past the horizon).
fn env_defaults(env: &str) -> anyhow::Result<(&'static str, f64, u64)> {
    match env {
        "pendulum" => Ok(("configs/pendulum_cvae_cem.ron", -200.0, 3000)),
        "cartpole" => Ok(("configs/cartpole_cvae_actor.ron", 500.0, 2000)),
        other => anyhow::bail!(
            "--env {other}: expected `pendulum` or `cartpole` (or give --config, --target and --budget)"
        ),
    }
}

pub fn solve(args: &BenchSolveArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seeds > 0, "--seeds must be at least 1");
    let defaults = args.env.as_deref().map(env_defaults).transpose()?;
    let config_path = match (&args.config, defaults) {
        (Some(path), _) => path.clone(),
        (None, Some((path, _, _))) => path.into(),
        (None, None) => unreachable!("clap requires --env or --config"),
    };
    let target = args
        .target
        .or(defaults.map(|d| d.1))
        .context("--target is needed with a --config and no --env")?;
    let budget = args
        .budget
        .or(defaults.map(|d| d.2))
        .context("--budget is needed with a --config and no --env")?;
    let device: DeviceSpec = args.device.parse()?;
    // Checked once up front, so that a bad config fails before any seed runs.
    let config = TrainConfig::load(&config_path, &args.set)?;
    anyhow::ensure!(
        config.eval.policy_episodes > 0,
        "{}: eval.policy_episodes is 0, so the runs would log no evaluation return",
        config_path.display()
    );
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = args.out.join(format!(
        "{}__{}",
        config_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("config"),
        stamp
    ));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let options = TrainOptions {
        runs_dir: out.clone(),
        device,
        progress: false,
        interrupt: Arc::new(AtomicBool::new(false)),
    };
    let mut seeds = Vec::new();
    for seed in args.first_seed..args.first_seed + args.seeds {
        let mut overrides = args.set.clone();
        overrides.push(format!("seed={seed}"));
        let config = TrainConfig::load(&config_path, &overrides)?;
        eprintln!("seed {seed}: training {} ...", config_path.display());
        let started = Instant::now();
        let outcome =
            wm_train::train(config, &options).with_context(|| format!("training seed {seed}"))?;
        let wall = started.elapsed().as_secs_f64();
        let curve = SeedCurve::from_run(seed, &outcome.run.dir, wall)
            .with_context(|| format!("reading the curve of seed {seed}"))?;
        eprintln!("seed {seed}: {:?} ({wall:.0} s)", curve.points);
        seeds.push(curve);
    }
    let setup = format!(
        "`wm bench solve --config {} --seeds {} --first-seed {}{}` ({}, {} cores)",
        config_path.display(),
        args.seeds,
        args.first_seed,
        args.set
            .iter()
            .map(|s| format!(" --set {s}"))
            .collect::<String>(),
        device,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let report = SolveReport {
        setup,
        target,
        budget,
        seeds,
    };
    let table = report.markdown();
    std::fs::write(out.join("solve.md"), &table)
        .with_context(|| format!("writing {}", out.join("solve.md").display()))?;
    std::fs::write(
        out.join("solve.json"),
        serde_json::to_string_pretty(&report)?,
    )
    .with_context(|| format!("writing {}", out.join("solve.json").display()))?;
    let title = format!(
        "{}: evaluation return, {} seeds",
        config_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("config"),
        report.seeds.len()
    );
    report.plot(&title, &out.join("solve.png"))?;
    println!("{table}");
    println!(
        "wrote {0}/solve.md, {0}/solve.json, {0}/solve.png",
        out.display()
    );
    Ok(())
}
