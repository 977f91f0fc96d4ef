//! `wm bench env`: environment step throughput, timed the same way as scripts/bench/env_gymnasium.py.

use std::time::Instant;

use anyhow::Context;
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use wm_envs::Action;

use crate::cli::{BenchEnvArgs, BenchOpsArgs, BenchPipelineArgs, BenchUpdateArgs};

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
    anyhow::ensure!(
        args.steps > 0 && args.repeats > 0,
        "--steps and --repeats must be positive"
    );
    let mut env = wm_envs::make(&args.env)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let action_space = env.action_space();
    let actions: Vec<Action> = (0..ACTION_POOL)
        .map(|_| action_space.sample(&mut rng))
        .collect();

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

#[derive(Debug, Serialize)]
struct UpdateBenchResult {
    implementation: &'static str,
    model: String,
    device: String,
    threads: usize,
    batch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq_len: Option<usize>,
    hidden: usize,
    steps: usize,
    median_ms: f64,
    p10_ms: f64,
    p90_ms: f64,
    updates_per_s: f64,
}

/// Host threads: `RAYON_NUM_THREADS` when set, else every core (reported for a GPU device).
fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub fn update(args: &BenchUpdateArgs) -> anyhow::Result<()> {
    use wm_models::{
        CvaeConfig, DeterministicMlpConfig, EnsembleConfig, GaussianMlpConfig, Normalizer,
    };
    use wm_replay::ReplayBuffer;
    use wm_rssm::{LatentConfig, RssmConfig};
    use wm_train::ModelConfig;
    use wm_train::data::{all_transitions, collect_episodes, model_spec, replay_spec};

    anyhow::ensure!(
        args.batch > 0 && args.hidden > 0 && args.steps > 0 && args.seq_len > 0,
        "--batch, --hidden, --seq-len and --steps must be positive"
    );
    let hidden = vec![args.hidden, args.hidden];
    let rssm = |latent| RssmConfig {
        deter: args.deter,
        hidden: args.hidden,
        latent,
        ..RssmConfig::default()
    };
    let config = match args.model.as_str() {
        "cvae" => ModelConfig::Cvae(CvaeConfig {
            hidden,
            ..CvaeConfig::default()
        }),
        "gaussian_mlp" => ModelConfig::Gaussian(GaussianMlpConfig {
            hidden,
            ..GaussianMlpConfig::default()
        }),
        "deterministic_mlp" => ModelConfig::Deterministic(DeterministicMlpConfig {
            hidden,
            ..DeterministicMlpConfig::default()
        }),
        "ensemble" => ModelConfig::Ensemble(EnsembleConfig {
            hidden,
            ..EnsembleConfig::default()
        }),
        "rssm_gaussian" => ModelConfig::Rssm(rssm(LatentConfig::Gaussian {
            size: 30,
            min_std: 0.1,
        })),
        "rssm_categorical" => ModelConfig::Rssm(rssm(LatentConfig::Categorical {
            groups: 32,
            classes: 32,
            unimix: 0.01,
            estimator: Default::default(),
        })),
        other => anyhow::bail!(
            "unknown model `{other}`: expected cvae, gaussian_mlp, deterministic_mlp, ensemble, rssm_gaussian or rssm_categorical"
        ),
    };
    let spec: wm_backend::DeviceSpec = args.device.parse()?;
    let device = spec.init()?.autodiff();
    device.seed(0);

    // The one-step models learn CartPole transitions, the RSSM Pendulum sequences (as in the
    // PyTorch twins: obs 4 / 2 actions, and obs 3 / 1 continuous action).
    let mut env = wm_envs::make(if config.is_sequence_model() {
        "pendulum"
    } else {
        "cartpole"
    })?;
    let mut buffer = ReplayBuffer::new(replay_spec(env.as_ref()), 100_000)?;
    collect_episodes(env.as_mut(), 0, 10_000, &mut buffer)?;
    let data = all_transitions(&buffer, usize::MAX);
    let normalizer = Normalizer::fit(&data.obs, &data.next_obs, &data.rewards, data.obs_dim);
    let mut model = config.init(&model_spec(env.as_ref()), normalizer, &device);
    // The configs' learning rates: 1e-3 for the one-step models and the RSSM alike.
    let learning_rate = 1e-3;
    let mut optimizer = burn::optim::AdamConfig::new().with_epsilon(1e-8).init();
    let mut rng = ChaCha8Rng::seed_from_u64(0);

    let mut times_ms = Vec::with_capacity(args.steps);
    for step_idx in 0..args.warmup + args.steps {
        let start = Instant::now();
        // Sampling and host-to-device copies are part of a real update, so they are timed too.
        let optim = wm_train::config::OptimConfig {
            lr: learning_rate,
            batch_size: args.batch,
            grad_clip: 100.0,
            eps: 1e-8,
            seq_len: args.seq_len,
        };
        // The step reads the loss and the gradient norm back (the non-finite guard), which waits
        // for the device, so asynchronous backends are timed fully.
        let (updated, _outcome) = wm_train::trainer::update_from_replay(
            model,
            &mut optimizer,
            &buffer,
            &mut rng,
            &optim,
            &device,
            false,
        )?;
        model = updated;
        if step_idx >= args.warmup {
            times_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times_ms.sort_by(f64::total_cmp);
    let quantile = |q: f64| times_ms[((times_ms.len() - 1) as f64 * q).round() as usize];
    let result = UpdateBenchResult {
        implementation: "worldmodel (burn)",
        model: args.model.clone(),
        device: spec.to_string(),
        threads: spec.cpu_threads().unwrap_or_else(cpu_threads),
        batch: args.batch,
        seq_len: config.is_sequence_model().then_some(args.seq_len),
        hidden: args.hidden,
        steps: args.steps,
        median_ms: quantile(0.5),
        p10_ms: quantile(0.1),
        p90_ms: quantile(0.9),
        updates_per_s: 1e3 / quantile(0.5),
    };
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{} on {} ({} threads), batch {}{}, hidden {}: median {:.2} ms/update (p10 {:.2}, p90 {:.2}), {:.0} updates/s",
            result.model,
            result.device,
            result.threads,
            result.batch,
            result.seq_len.map_or(String::new(), |t| format!("x{t}")),
            result.hidden,
            result.median_ms,
            result.p10_ms,
            result.p90_ms,
            result.updates_per_s
        );
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct OpBenchResult {
    op: &'static str,
    pass: &'static str,
    shape: [usize; 2],
    device: String,
    threads: usize,
    fused_median_us: f64,
    composed_median_us: f64,
    /// Composed time over fused time.
    speedup: f64,
}

/// The operations of `wm bench ops`: name, fused version, composed version. Each takes an input
/// and a state; only the GRU gate reads the state.
type BenchOp = fn(Tensor<2>, Tensor<2>) -> Tensor<2>;
const BENCH_OPS: [(&str, BenchOp, BenchOp); 5] = [
    (
        "silu",
        |x, _| wm_kernels::silu(x),
        |x, _| wm_kernels::silu_composed(x),
    ),
    (
        "sigmoid",
        |x, _| wm_kernels::sigmoid(x),
        |x, _| wm_kernels::sigmoid_composed(x),
    ),
    (
        "tanh",
        |x, _| wm_kernels::tanh(x),
        |x, _| wm_kernels::tanh_composed(x),
    ),
    (
        "softplus",
        |x, _| wm_kernels::softplus(x),
        |x, _| wm_kernels::softplus_composed(x),
    ),
    (
        "gru_gate",
        |parts, h| wm_kernels::gru_gate(parts, h, 1.0),
        |parts, h| wm_kernels::gru_gate_composed(parts, h, 1.0),
    ),
];

/// `wm bench ops`: each fused operation of `wm_kernels` against its composed version, forward
/// only (no autodiff) and forward plus backward (autodiff, upstream gradient of ones).
pub fn ops(args: &BenchOpsArgs) -> anyhow::Result<()> {
    use burn::tensor::Distribution;

    anyhow::ensure!(
        args.rows > 0 && args.cols > 0 && args.rounds > 0 && args.steps > 0,
        "--rows, --cols, --rounds and --steps must be positive"
    );
    let known: Vec<&str> = BENCH_OPS.iter().map(|(name, ..)| *name).collect();
    for op in &args.ops {
        anyhow::ensure!(
            known.contains(&op.as_str()),
            "--ops: unknown operation `{op}` (known: {})",
            known.join(", ")
        );
    }
    let spec: wm_backend::DeviceSpec = args.device.parse()?;
    let device = spec.init()?;
    device.seed(0);
    let autodiff = device.clone().autodiff();
    for (name, fused_op, composed_op) in BENCH_OPS {
        if !args.ops.iter().any(|op| op == name) {
            continue;
        }
        let gate = name == "gru_gate";
        let shape = [args.rows, if gate { 3 * args.cols } else { args.cols }];
        // Standard normal inputs, the typical range of a hidden layer's pre-activations; a
        // state in (-1, 1) for the GRU gate.
        let x_plain = Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let h_plain = Tensor::<2>::random(
            [args.rows, args.cols],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let x_autodiff = Tensor::<2>::from_data(x_plain.to_data(), &autodiff);
        let h_autodiff = Tensor::<2>::from_data(h_plain.to_data(), &autodiff);

        let forward = |op: BenchOp| {
            // The inputs are shared with `x_plain`, so no version may overwrite them in place.
            let y = op(x_plain.clone(), h_plain.clone());
            let _ = y.into_data();
        };
        let forward_backward = |op: BenchOp| {
            let x = x_autodiff.clone().require_grad();
            let h = h_autodiff.clone().require_grad();
            let grads = op(x.clone(), h.clone()).sum().backward();
            let dx = x.grad(&grads).expect("x requires grad");
            let _ = dx.into_data();
            if gate {
                let _ = h.grad(&grads).expect("h requires grad").into_data();
            }
        };
        let passes: [(&'static str, &dyn Fn(BenchOp)); 2] = [
            ("forward", &forward),
            ("forward+backward", &forward_backward),
        ];
        for (pass, run) in passes {
            let versions: [BenchOp; 2] = [fused_op, composed_op];
            let mut times_us = [Vec::new(), Vec::new()];
            for _ in 0..args.rounds {
                for (version, times) in versions.iter().zip(times_us.iter_mut()) {
                    run(*version);
                    for _ in 0..args.steps {
                        let start = Instant::now();
                        run(*version);
                        times.push(start.elapsed().as_secs_f64() * 1e6);
                    }
                }
            }
            let median = |times: &mut Vec<f64>| {
                times.sort_by(f64::total_cmp);
                times[times.len() / 2]
            };
            let [fused, composed] = times_us.each_mut().map(median);
            let result = OpBenchResult {
                op: name,
                pass,
                shape,
                device: spec.to_string(),
                threads: spec.cpu_threads().unwrap_or_else(cpu_threads),
                fused_median_us: fused,
                composed_median_us: composed,
                speedup: composed / fused,
            };
            if args.json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                println!(
                    "{name} {pass} on {} [{}, {}] ({} threads): fused {:.1} us, composed {:.1} us (median of {} calls each); composed/fused {:.2}x",
                    result.device,
                    shape[0],
                    shape[1],
                    result.threads,
                    fused,
                    composed,
                    args.rounds * args.steps,
                    result.speedup
                );
            }
        }
    }
    Ok(())
}

pub fn pipeline(args: &BenchPipelineArgs) -> anyhow::Result<()> {
    let runs = std::env::temp_dir().join(format!("wm-bench-pipeline-{}", std::process::id()));
    println!(
        "| mode | workers | replay ratio | updates | env steps | wall s | env steps/s | updates/s | learner busy | achieved ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &ratio in &args.ratios {
        let modes: Vec<(String, usize, bool)> =
            std::iter::once(("collect-then-train (lock-step)".to_string(), 1, true))
                .chain(
                    args.workers
                        .iter()
                        .map(|&n| ("pipeline".to_string(), n, false)),
                )
                .collect();
        for (mode, workers, deterministic) in modes {
            let overrides = vec![
                format!("schedule.updates={}", args.updates),
                format!("pipeline.replay_ratio={ratio}"),
                format!("pipeline.workers={workers}"),
                format!("pipeline.deterministic={deterministic}"),
                "schedule.eval_every=1000000".into(),
                "schedule.checkpoint_every=1000000".into(),
                "data.prefill_steps=2000".into(),
                format!("pipeline.tolerance_steps={}", args.tolerance_steps),
                "data.eval_steps=200".into(),
                "eval.iwae_samples=[1]".into(),
                "eval.max_nll_transitions=64".into(),
            ];
            let config = wm_train::TrainConfig::load(&args.config, &overrides)?;
            let options = wm_train::TrainOptions {
                runs_dir: runs.clone(),
                device: wm_backend::DeviceSpec::Cpu,
                progress: false,
                interrupt: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            };
            let outcome = wm_train::train(config, &options)?;
            let stats = outcome.pipeline.context("the run did no update")?;
            let collected: u64 = stats.per_worker.iter().map(|(_, steps)| steps).sum();
            let seconds = outcome.pipeline_seconds;
            println!(
                "| {mode} | {workers} | {ratio} | {} | {collected} | {seconds:.2} | {:.0} | {:.1} | {:.2} | {:.3} |",
                outcome.updates_this_run,
                collected as f64 / seconds,
                outcome.updates_this_run as f64 / seconds,
                stats.busy_fraction,
                stats.achieved_ratio
            );
        }
    }
    let _ = std::fs::remove_dir_all(&runs);
    Ok(())
}
