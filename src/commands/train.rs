//! `wm train` and `wm eval`.

use anyhow::Context;
use wm_backend::DeviceSpec;
use wm_train::eval::{EvalOptions, evaluate};
use wm_train::{TrainConfig, TrainOptions};

use crate::cli::{EvalArgs, TrainArgs};

pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let device: DeviceSpec = args.device.parse()?;
    let options = TrainOptions { runs_dir: args.runs_dir.clone(), device, progress: !args.quiet };
    let outcome = if let Some(run_dir) = &args.resume {
        wm_train::resume(run_dir, &args.set, &options).with_context(|| format!("resuming {}", run_dir.display()))?
    } else {
        let path = args.config.as_ref().expect("clap requires --config or --resume");
        let mut overrides = args.set.clone();
        if let Some(seed) = args.seed {
            overrides.push(format!("seed={seed}"));
        }
        let config = TrainConfig::load(path, &overrides)?;
        wm_train::train(config, &options).context("training")?
    };
    println!("run folder: {}", outcome.run.dir.display());
    println!("{}", outcome.report.table());
    Ok(())
}

pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let device = args.device.parse::<DeviceSpec>()?.init()?;
    let (config, model, eval_buffer, update) =
        wm_train::load_for_eval(&args.run, &device).with_context(|| format!("loading run {}", args.run.display()))?;
    let iwae_samples = match (&args.iwae_samples, model.kind()) {
        (Some(ks), _) => ks.clone(),
        (None, "cvae") => config.eval.iwae_samples.clone(),
        (None, _) => vec![1],
    };
    anyhow::ensure!(!iwae_samples.contains(&0), "--iwae-samples must be positive, got {iwae_samples:?}");
    let options = EvalOptions {
        iwae_samples,
        max_nll_transitions: config.eval.max_nll_transitions,
        horizons: config.eval.horizons.clone(),
        max_open_loop_windows: 4096,
    };
    let report = evaluate(&model, &eval_buffer, &options, update, &device);
    let path = wm_train::run::RunFolder::open(&args.run).eval_json();
    std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", report.table());
    println!("written to {}", path.display());
    Ok(())
}
