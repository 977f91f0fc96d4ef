//! `wm bench estimators --curves`: the same small cVAE with a categorical latent trained with
//! each gradient estimator (and the Gaussian latent and the IWAE objective beside them) for a
//! fixed number of updates on a bimodal transition (`s ~ U(-1, 1)`, `s' = s ± 1` with
//! probability 1/2 each, noise `N(0, 0.05^2)`, an action without effect), reporting the
//! held-out NLL (IWAE bound, `k` samples) against updates and seconds.

use std::time::Instant;

use anyhow::Context;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use wm_models::categorical::{CategoricalEstimator, ReinforceBaseline, TemperatureAnneal};
use wm_models::cvae::{CvaeLatent, CvaeObjective};
use wm_models::{
    ActionSpec, CvaeConfig, ModelSpec, Normalizer, TransitionModel, TransitionTensors,
};

/// Settings of one learning-curve run.
#[derive(Debug, Clone)]
pub struct CurveSettings {
    /// Updates per configuration.
    pub updates: usize,
    /// Held-out evaluation every this many updates (and at 0 and the end).
    pub eval_every: usize,
    /// Transitions per update.
    pub batch: usize,
    /// Held-out transitions.
    pub held_out: usize,
    /// IWAE samples of the held-out NLL.
    pub iwae_k: usize,
    /// Seed of data, weights and noise (the same for every configuration).
    pub seed: u64,
    /// Where to draw the curves (PNG), if anywhere.
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct CurvePoint {
    config: String,
    update: usize,
    seconds: f64,
    held_out_nll: f64,
}

const NOISE: f32 = 0.05;

fn spec() -> ModelSpec {
    ModelSpec {
        obs_dim: 1,
        action: ActionSpec::Continuous {
            low: vec![-1.0],
            high: vec![1.0],
        },
    }
}

/// `(obs, action, next_obs, reward)` host rows of `n` bimodal transitions.
fn host(rng: &mut ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut o, mut a, mut x, mut r) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let s: f32 = rng.random_range(-1.0..1.0);
        let jump = if rng.random::<bool>() { 1.0 } else { -1.0 };
        // Box-Muller for the noise.
        let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
        let eps = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
        o.push(s);
        a.push(rng.random_range(-1.0..1.0));
        x.push(s + jump + NOISE * eps);
        r.push(0.0);
    }
    (o, a, x, r)
}

fn batch(rng: &mut ChaCha8Rng, n: usize, device: &Device) -> TransitionTensors {
    let (o, a, x, r) = host(rng, n);
    TransitionTensors::from_host(&o, &a, &x, &r, &vec![0.0; n], n, 1, 1, device)
}

/// The configurations compared: one cVAE (hidden `[64, 64]`, learned prior, 2 groups of 4
/// classes, free bits 1) with each categorical estimator, then the IWAE objective (which needs
/// free bits 0, so the ELBO without free bits beside it) and the Gaussian latent (width 2) with
/// the ELBO and the IWAE objective.
fn configurations(updates: usize) -> Vec<(String, CvaeConfig)> {
    let categorical = |estimator, anneal| CvaeConfig {
        hidden: vec![64, 64],
        latent: CvaeLatent::Categorical {
            groups: 2,
            classes: 4,
            unimix: 0.01,
            estimator,
            anneal,
        },
        ..Default::default()
    };
    let reinforce = |baseline| CategoricalEstimator::Reinforce { baseline };
    vec![
        (
            "straight_through".into(),
            categorical(CategoricalEstimator::StraightThrough, None),
        ),
        (
            "gumbel_softmax_t1".into(),
            categorical(
                CategoricalEstimator::GumbelSoftmax { temperature: 1.0 },
                None,
            ),
        ),
        (
            "gumbel_softmax_anneal_1_to_0.1".into(),
            categorical(
                CategoricalEstimator::GumbelSoftmax { temperature: 1.0 },
                Some(TemperatureAnneal {
                    min: 0.1,
                    updates: updates as u64,
                }),
            ),
        ),
        (
            "st_gumbel_t1".into(),
            categorical(
                CategoricalEstimator::StraightThroughGumbel { temperature: 1.0 },
                None,
            ),
        ),
        (
            "reinforce".into(),
            categorical(reinforce(ReinforceBaseline::None), None),
        ),
        (
            "reinforce_ma".into(),
            categorical(
                reinforce(ReinforceBaseline::MovingAverage { decay: 0.9 }),
                None,
            ),
        ),
        (
            "reinforce_learned".into(),
            categorical(reinforce(ReinforceBaseline::Learned { hidden: 64 }), None),
        ),
        (
            "reinforce_loo_k4".into(),
            categorical(
                reinforce(ReinforceBaseline::LeaveOneOut { samples: 4 }),
                None,
            ),
        ),
        (
            "straight_through_iwae_k4".into(),
            CvaeConfig {
                free_nats: 0.0,
                objective: CvaeObjective::Iwae { samples: 4 },
                ..categorical(CategoricalEstimator::StraightThrough, None)
            },
        ),
        (
            "straight_through_free_nats_0".into(),
            CvaeConfig {
                free_nats: 0.0,
                ..categorical(CategoricalEstimator::StraightThrough, None)
            },
        ),
        (
            "gaussian_latent".into(),
            CvaeConfig {
                hidden: vec![64, 64],
                latent_dim: 2,
                ..Default::default()
            },
        ),
        (
            "gaussian_latent_iwae_k4".into(),
            CvaeConfig {
                hidden: vec![64, 64],
                latent_dim: 2,
                free_nats: 0.0,
                objective: CvaeObjective::Iwae { samples: 4 },
                ..Default::default()
            },
        ),
    ]
}

/// Trains every configuration and prints the table (or JSON lines).
pub fn curves(settings: &CurveSettings, device: &Device, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.updates >= 1 && settings.eval_every >= 1 && settings.batch >= 1,
        "--updates, --eval-every and --batch must be at least 1"
    );
    anyhow::ensure!(
        (1..=100_000).contains(&settings.held_out) && (1..=4096).contains(&settings.iwae_k),
        "--held-out must be in 1..=100000 and --iwae-k in 1..=4096"
    );
    if let Some(path) = &settings.plot {
        anyhow::ensure!(
            path.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png")),
            "--plot must name a .png file, got {}",
            path.display()
        );
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        anyhow::ensure!(
            parent.is_none_or(|p| p.is_dir()),
            "--plot {}: the folder does not exist",
            path.display()
        );
    }
    let train_device = device.clone().autodiff();
    let mut data_rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let (o, _, x, r) = host(&mut data_rng, 10_000);
    let normalizer = Normalizer::fit(&o, &x, &r, 1);
    let held_out = batch(&mut data_rng, settings.held_out, device);
    let entropy = 0.5
        * (2.0 * std::f64::consts::PI * std::f64::consts::E * (NOISE as f64).powi(2)).ln()
        + 2f64.ln();
    if !json {
        println!(
            "bimodal transition, true conditional entropy {entropy:.3} nats; held-out NLL = -IWAE bound (k = {}) over {} transitions",
            settings.iwae_k, settings.held_out
        );
    }
    let mut table: Vec<(String, Vec<CurvePoint>)> = Vec::new();
    for (name, config) in configurations(settings.updates) {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        train_device.seed(settings.seed);
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed + 1);
        let mut model = config.init(&spec(), normalizer.clone(), &train_device);
        let mut optim = AdamConfig::new().init();
        let mut points = Vec::new();
        let mut seconds = 0.0;
        let eval =
            |model: &wm_models::Cvae, update: usize, seconds: f64| -> anyhow::Result<CurvePoint> {
                device.seed(settings.seed + 2);
                let ll = model.valid().log_likelihood(&held_out, settings.iwae_k);
                let values = ll
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))
                    .context("reading the held-out likelihood")?;
                Ok(CurvePoint {
                    config: name.clone(),
                    update,
                    seconds,
                    held_out_nll: -values.iter().map(|v| *v as f64).sum::<f64>()
                        / values.len() as f64,
                })
            };
        points.push(eval(&model, 0, 0.0)?);
        for update in 1..=settings.updates {
            let b = batch(&mut rng, settings.batch, &train_device);
            let start = Instant::now();
            model.set_update(update as u64 - 1);
            let loss = model.loss(&b);
            let grads = GradientsParams::from_grads(loss.total.backward(), &model);
            model = optim.step(1e-3, model, grads);
            seconds += start.elapsed().as_secs_f64();
            if update % settings.eval_every == 0 || update == settings.updates {
                points.push(eval(&model, update, seconds)?);
            }
        }
        if json {
            for p in &points {
                println!("{}", serde_json::to_string(p)?);
            }
        } else {
            eprintln!(
                "{name}: final held-out NLL {:.4} after {:.1} s",
                points.last().map(|p| p.held_out_nll).unwrap_or(f64::NAN),
                seconds
            );
        }
        table.push((name, points));
    }
    if !json {
        let first = &table[0].1;
        print!("| estimator |");
        for p in first {
            print!(" NLL @ {} |", p.update);
        }
        println!(" train s | ms/update |");
        print!("|---|");
        for _ in first {
            print!("---:|");
        }
        println!("---:|---:|");
        for (name, points) in &table {
            print!("| {name} |");
            for p in points {
                print!(" {:.3} |", p.held_out_nll);
            }
            let s = points.last().map(|p| p.seconds).unwrap_or(0.0);
            println!(" {:.1} | {:.2} |", s, 1e3 * s / settings.updates as f64);
        }
    }
    if let Some(path) = &settings.plot {
        let against = |x: fn(&CurvePoint) -> f64| -> Vec<wm_train::plot::Curve> {
            table
                .iter()
                .map(|(name, points)| {
                    let line = points.iter().map(|p| (x(p), p.held_out_nll)).collect();
                    (name.clone(), line)
                })
                .collect()
        };
        wm_train::plot::plot_curves(
            &format!(
                "bimodal cVAE, seed {}: held-out NLL (IWAE k = {}); true entropy {entropy:.2} nats",
                settings.seed, settings.iwae_k
            ),
            "held-out NLL (nats)",
            &[
                ("updates", against(|p| p.update as f64)),
                ("training seconds", against(|p| p.seconds)),
            ],
            Some((entropy - 0.2, 2.0)),
            path,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
