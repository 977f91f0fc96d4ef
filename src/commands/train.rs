//! `wm train` and `wm eval`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use wm_backend::DeviceSpec;
use wm_train::eval::{EvalOptions, evaluate_any};
use wm_train::{TrainConfig, TrainOptions};

use crate::cli::{EvalArgs, PlotArgs, TrainArgs};

pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let device: DeviceSpec = args.device.parse()?;
    // A device this build or machine lacks is an error before anything is written.
    device.init()?;
    if let Some(run_dir) = &args.resume {
        check_replay_files_exist(run_dir, args.new_replay)?;
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    // First SIGINT (Ctrl-C), SIGTERM (timeout, docker stop, systemd) or SIGHUP: stop at the next
    // safe point with a checkpoint and exit non-zero naming the resume command; a second one:
    // exit at once.
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::AcqRel) {
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping at the next safe point with a checkpoint (interrupt again to quit at once)"
        );
    })
    .context("installing the signal handler")?;
    let options = TrainOptions {
        runs_dir: args.runs_dir.clone(),
        device,
        progress: !args.quiet,
        interrupt,
    };
    let outcome = if let Some(run_dir) = &args.resume {
        wm_train::resume(run_dir, &args.set, &options)
            .with_context(|| format!("resuming {}", run_dir.display()))?
    } else {
        let path = args
            .config
            .as_ref()
            .expect("clap requires --config or --resume");
        let mut overrides = args.set.clone();
        if let Some(seed) = args.seed {
            overrides.push(format!("seed={seed}"));
        }
        if args.deterministic {
            overrides.push("pipeline.deterministic=true".into());
        }
        let config = TrainConfig::load(path, &overrides)?;
        wm_train::train(config, &options).context("training")?
    };
    println!("run folder: {}", outcome.run.dir.display());
    println!(
        "{} updates this run, {} environment steps in replay",
        outcome.updates_this_run, outcome.env_steps
    );
    println!("{}", outcome.report.table());
    Ok(())
}

/// A resumed run needs its replay files: without them `resume` would collect a new prefill and
/// count the wrong number of transitions. `--new-replay` asks for exactly that.
fn check_replay_files_exist(run_dir: &std::path::Path, new_replay: bool) -> anyhow::Result<()> {
    let run = wm_train::run::RunFolder::open(run_dir);
    if new_replay || !run.config().is_file() {
        // Without a config the resume fails anyway, with the better message.
        return Ok(());
    }
    let missing: Vec<String> = [run.train_replay(), run.eval_replay()]
        .iter()
        .filter(|path| !path.exists())
        .map(|path| path.display().to_string())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "resuming {}: replay file {} missing; `--new-replay` collects new data (a new prefill and held-out episodes) instead",
        run_dir.display(),
        missing.join(" and ")
    );
    Ok(())
}

/// Writes `contents` to `path`. When `path` is only the default place in the run folder and the
/// folder is read-only, says so on stderr and returns false instead of failing.
fn write_output(
    path: &std::path::Path,
    contents: &[u8],
    default_place: bool,
) -> anyhow::Result<bool> {
    match std::fs::write(path, contents) {
        Ok(()) => Ok(true),
        Err(error) if default_place && is_read_only(&error) => {
            eprintln!(
                "note: {} not written: {error} (choose another file with --out)",
                path.display()
            );
            Ok(false)
        }
        Err(error) => Err(error).with_context(|| format!("writing {}", path.display())),
    }
}

fn is_read_only(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let device = args.device.parse::<DeviceSpec>()?.init()?;
    let (config, model, eval_buffer, update) = wm_train::load_for_eval(&args.run, &device)
        .with_context(|| format!("loading run {}", args.run.display()))?;
    // Every model gets the configured sample counts; exact likelihoods give one entry anyway.
    let iwae_samples = args
        .iwae_samples
        .clone()
        .unwrap_or_else(|| config.eval.iwae_samples.clone());
    anyhow::ensure!(
        !iwae_samples.is_empty() && !iwae_samples.contains(&0),
        "--iwae-samples must be positive, got {iwae_samples:?}"
    );
    let options = EvalOptions {
        iwae_samples,
        max_nll_transitions: config.eval.max_nll_transitions,
        horizons: config.eval.horizons.clone(),
        max_open_loop_windows: 4096,
        truth: wm_train::eval::TrueLaw::of_env(&config.env),
    };
    let other = match &args.compare {
        Some(other_dir) => {
            let (_, other, _, other_update) = wm_train::load_for_eval(other_dir, &device)
                .with_context(|| format!("loading run {}", other_dir.display()))?;
            Some((other, other_update))
        }
        None => None,
    };
    // Played first: a bad --policy-episodes fails before the (longer) held-out evaluation.
    let played = policy_return(args, &config, &device)?;
    let mut report = evaluate_any(&model, &eval_buffer, &options, update, &device);
    if let Some((ret, length)) = played {
        (report.policy_return, report.policy_episode_length) = (Some(ret), Some(length));
    }
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| wm_train::run::RunFolder::open(&args.run).eval_json());
    println!("{}", report.table());
    if write_output(
        &path,
        serde_json::to_string_pretty(&report)?.as_bytes(),
        args.out.is_none(),
    )? {
        println!("written to {}", path.display());
    }

    if let Some((other, other_update)) = &other {
        // The other model on this run's held-out episodes, with the same protocol and options.
        let theirs = evaluate_any(other, &eval_buffer, &options, *other_update, &device);
        println!(
            "\nboth models on {}'s {} held-out transitions, one protocol: filtered from each episode's start, then imagined under the true actions",
            args.run.display(),
            eval_buffer.n_transitions()
        );
        print!("{}", report.compare_table(&theirs));
    }
    Ok(())
}

/// The mean return and length of the run's acting policy (its actor, or its planner over the
/// model) on `--policy-episodes` real episodes, on the seeds the trainer's policy evaluation
/// uses; `None` for a run that acted randomly (an error if episodes were asked for) or 0 episodes.
fn policy_return(
    args: &EvalArgs,
    config: &wm_train::TrainConfig,
    device: &wm_backend::Device,
) -> anyhow::Result<Option<(f64, f64)>> {
    let episodes = args
        .policy_episodes
        .unwrap_or(if config.eval.policy_episodes > 0 {
            config.eval.policy_episodes
        } else {
            5
        });
    if episodes == 0 {
        return Ok(None);
    }
    anyhow::ensure!(
        episodes <= 100_000,
        "--policy-episodes must be at most 100000, got {episodes}"
    );
    if matches!(config.data.policy, wm_train::config::CollectPolicy::Random) {
        anyhow::ensure!(
            args.policy_episodes.is_none(),
            "--policy-episodes: run {} acts with random actions (data.policy: Random): it has no trained policy",
            args.run.display()
        );
        return Ok(None);
    }
    let run = wm_train::play::PlayableRun::load(&args.run, device)
        .with_context(|| format!("loading the acting policy of run {}", args.run.display()))?;
    let returns = wm_train::trainer::policy_returns(
        &run.model,
        run.policy_net.as_ref(),
        &run.config,
        episodes,
        device,
    )?;
    Ok(Some(returns))
}

pub fn plot(args: &PlotArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.episodes > 0 && args.horizon > 0,
        "--episodes and --horizon must be positive"
    );
    let device = args.device.parse::<DeviceSpec>()?.init()?;
    let (_, model, eval_buffer, update) = wm_train::load_for_eval(&args.run, &device)
        .with_context(|| format!("loading run {}", args.run.display()))?;
    let run = wm_train::run::RunFolder::open(&args.run);
    let path = args.out.clone().unwrap_or_else(|| run.plot_png());
    let compare = match &args.compare {
        Some(dir) => Some(
            wm_train::load_for_eval(dir, &device)
                .with_context(|| format!("loading run {}", dir.display()))?
                .1,
        ),
        None => None,
    };
    let (width, height) = wm_train::plot::plot_open_loop(
        &model,
        compare.as_ref(),
        &eval_buffer,
        args.episodes,
        args.horizon,
        &path,
        &device,
    )?;
    let png = std::fs::read(&path).with_context(|| format!("reading back {}", path.display()))?;
    let mut tensorboard = match wm_train::tensorboard::TensorBoard::create(&run.dir) {
        Ok(tensorboard) => tensorboard,
        Err(error) if is_read_only(&error) => {
            eprintln!("note: not sent to TensorBoard: {error} (the run folder is read-only)");
            println!("written {} ({width}x{height})", path.display());
            return Ok(());
        }
        Err(error) => return Err(error).context("opening TensorBoard events"),
    };
    tensorboard.png("eval/open_loop", png, width, height, update);
    tensorboard.flush()?;
    println!(
        "written {} ({width}x{height}) and sent to TensorBoard as eval/open_loop",
        path.display()
    );
    Ok(())
}
