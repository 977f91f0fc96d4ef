//! `wm bench estimators`: the gradient estimators of a categorical latent on the toy problem of
//! `wm_rssm::estimators` (one categorical of 4 classes, `f(z) = (z·v - t)^2`), each against
//! the exact gradient by enumeration: bias, variance, signal-to-noise ratio and time per
//! gradient.

use std::time::Instant;

use clap::Args;
use serde::Serialize;
use wm_rssm::CategoricalEstimator;
use wm_rssm::estimators::{
    Baseline, CategoricalProblem, EstimateStats, GradientEstimator, draw_estimates, exact_gradient,
};

/// Arguments of `wm bench estimators`.
#[derive(Debug, Args)]
pub struct BenchEstimatorsArgs {
    /// Independent gradient estimates per estimator (computed as one batch).
    #[arg(long, default_value_t = 100_000)]
    pub estimates: usize,
    /// Single-estimate calls timed per estimator (the per-call cost, autodiff graph included).
    #[arg(long, default_value_t = 200)]
    pub calls: usize,
    /// Seed of the device RNG (the Gumbel noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: `cpu`, `tch-cpu`, `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object per estimator instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Instead of the gradient table: learning curves of a small cVAE with a categorical
    /// latent trained with each estimator (held-out NLL against updates and seconds).
    #[arg(long)]
    pub curves: bool,
    /// `--curves`: updates per estimator.
    #[arg(long, default_value_t = 2000)]
    pub updates: usize,
    /// `--curves`: held-out evaluation every this many updates.
    #[arg(long, default_value_t = 500)]
    pub eval_every: usize,
    /// `--curves`: transitions per update.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// `--curves`: held-out transitions.
    #[arg(long, default_value_t = 1000)]
    pub held_out: usize,
    /// `--curves`: IWAE samples of the held-out NLL.
    #[arg(long, default_value_t = 64)]
    pub iwae_k: usize,
    /// `--curves`: also draw the held-out NLL against updates and against seconds to this PNG.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct EstimatorBenchResult {
    estimator: String,
    estimates: usize,
    bias_norm: f64,
    standard_error_norm: f64,
    trace_variance: f64,
    snr: f64,
    cosine: f64,
    us_per_gradient_batched: f64,
    us_per_call: f64,
}

/// The estimators the table compares.
fn estimators() -> Vec<GradientEstimator> {
    let reinforce = |samples, baseline| GradientEstimator::Reinforce { samples, baseline };
    let mut list = vec![
        reinforce(1, Baseline::None),
        reinforce(1, Baseline::MovingAverage { decay: 0.9 }),
        reinforce(4, Baseline::None),
        reinforce(4, Baseline::LeaveOneOut),
        GradientEstimator::Pathwise(CategoricalEstimator::StraightThrough),
    ];
    for temperature in [1.0, 0.5, 0.25, 0.1] {
        list.push(GradientEstimator::Pathwise(
            CategoricalEstimator::GumbelSoftmax { temperature },
        ));
    }
    for temperature in [1.0, 0.5] {
        list.push(GradientEstimator::Pathwise(
            CategoricalEstimator::StraightThroughGumbel { temperature },
        ));
    }
    list
}

/// Runs `wm bench estimators`.
pub fn estimators_bench(args: &BenchEstimatorsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.estimates >= 2 && args.calls >= 1,
        "--estimates must be at least 2 and --calls at least 1, got {} and {}",
        args.estimates,
        args.calls
    );
    let spec: wm_backend::DeviceSpec = args.device.parse()?;
    let device = spec.init()?;
    if args.curves {
        let settings = super::bench_curves::CurveSettings {
            updates: args.updates,
            eval_every: args.eval_every,
            batch: args.batch,
            held_out: args.held_out,
            iwae_k: args.iwae_k,
            seed: args.seed,
            plot: args.plot.clone(),
        };
        return super::bench_curves::curves(&settings, &device, args.json);
    }
    let problem = CategoricalProblem::toy();
    let exact = exact_gradient(&problem, &device);
    if !args.json {
        println!(
            "toy: logits {:?}, f(z) = (z.{:?} - {})^2, exact gradient {:.6?}",
            problem.logits, problem.objective.values, problem.objective.target, exact
        );
        println!(
            "| estimator | bias norm | std. error of mean | trace variance | SNR | cosine | us/gradient (batch of {}) | us/call (one gradient) |",
            args.estimates
        );
        println!("|---|---|---|---|---|---|---|---|");
    }
    for estimator in estimators() {
        device.seed(args.seed);
        let start = Instant::now();
        let estimates = draw_estimates(&problem, &estimator, args.estimates, &device)
            .map_err(|e| anyhow::anyhow!("estimator {}: {e}", estimator.name()))?;
        let batched = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..args.calls {
            draw_estimates(&problem, &estimator, 1, &device)
                .map_err(|e| anyhow::anyhow!("estimator {}: {e}", estimator.name()))?;
        }
        let per_call = start.elapsed().as_secs_f64() / args.calls as f64;
        let stats = EstimateStats::new(&estimates, &exact);
        let result = EstimatorBenchResult {
            estimator: estimator.name(),
            estimates: args.estimates,
            bias_norm: stats.bias_norm,
            standard_error_norm: (stats.trace_variance / stats.n as f64).sqrt(),
            trace_variance: stats.trace_variance,
            snr: stats.snr,
            cosine: stats.cosine,
            us_per_gradient_batched: batched * 1e6 / args.estimates as f64,
            us_per_call: per_call * 1e6,
        };
        if args.json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            println!(
                "| {} | {:.4} | {:.4} | {:.3} | {:.3} | {:.4} | {:.3} | {:.1} |",
                result.estimator,
                result.bias_norm,
                result.standard_error_norm,
                result.trace_variance,
                result.snr,
                result.cosine,
                result.us_per_gradient_batched,
                result.us_per_call
            );
        }
    }
    Ok(())
}
