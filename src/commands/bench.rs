//! `wm bench env`: environment step throughput, timed the same way as scripts/bench_env.py.

use std::time::Instant;

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use wm_envs::Action;

use crate::cli::BenchEnvArgs;

/// Number of pre-sampled actions cycled through, so that the timed loop measures the
/// environment and not the random-number generator (the Python side does the same).
const ACTION_POOL: usize = 4096;

#[derive(Debug, Serialize)]
struct EnvBenchResult {
    env: String,
    steps_per_repeat: u64,
    repeats: usize,
    median_steps_per_s: f64,
    median_ns_per_step: f64,
    episodes_per_repeat: u64,
}

pub fn env_steps(args: &BenchEnvArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.steps > 0 && args.repeats > 0, "--steps and --repeats must be positive");
    let mut env = wm_envs::make(&args.env)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let action_space = env.action_space();
    let actions: Vec<Action> = (0..ACTION_POOL).map(|_| action_space.sample(&mut rng)).collect();

    let mut seconds = Vec::with_capacity(args.repeats);
    let mut episodes_per_repeat = 0;
    for _ in 0..args.repeats {
        env.reset(Some(args.seed));
        let mut episodes = 0u64;
        let start = Instant::now();
        for step_idx in 0..args.steps {
            let step = env
                .step(&actions[step_idx as usize % ACTION_POOL])
                .with_context(|| format!("stepping {} at step {step_idx}", env.id()))?;
            if step.terminated || step.truncated {
                env.reset(None);
                episodes += 1;
            }
        }
        seconds.push(start.elapsed().as_secs_f64());
        episodes_per_repeat = episodes;
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let result = EnvBenchResult {
        env: env.id().to_string(),
        steps_per_repeat: args.steps,
        repeats: args.repeats,
        median_steps_per_s: args.steps as f64 / median,
        median_ns_per_step: median * 1e9 / args.steps as f64,
        episodes_per_repeat,
    };
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{}: {:.0} steps/s ({:.1} ns/step), median of {} x {} steps, {} episodes each",
            result.env,
            result.median_steps_per_s,
            result.median_ns_per_step,
            result.repeats,
            result.steps_per_repeat,
            result.episodes_per_repeat
        );
    }
    Ok(())
}
