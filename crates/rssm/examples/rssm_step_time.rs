//! Times one RSSM update (loss, backward, global-norm clip, Adam) on the flex CPU backend, in
//! phases, for batch 16 x 50, deter 200, obs 3, action 1 (Pendulum-like random data).
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p wm-rssm --example rssm_step_time -- [gaussian|categorical] [steps]
//! ```
//! Prints one JSON line per latent kind, with the median of each phase. Set
//! `RSSM_TIME_OBSERVE=1` to also time the posterior rollout alone (forward only).

use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use wm_models::ActionSpec;
use wm_rssm::{LatentConfig, ModelSpec, RssmConfig, SequenceTensors, clip_global_norm};

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kinds: Vec<&str> = match args.first().map(String::as_str) {
        Some("gaussian") => vec!["gaussian"],
        Some("categorical") => vec!["categorical"],
        _ => vec!["gaussian", "categorical"],
    };
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let warmup = 5;
    let with_observe = std::env::var_os("RSSM_TIME_OBSERVE").is_some();
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (b, t, o) = (16, 50, 3);
    for kind in kinds {
        let device = Device::flex();
        device.seed(0);
        let device = device.autodiff();
        let latent = match kind {
            "gaussian" => LatentConfig::default(),
            _ => LatentConfig::categorical(),
        };
        let config = RssmConfig {
            latent,
            ..RssmConfig::default()
        };
        let spec = ModelSpec {
            obs_dim: o,
            action: ActionSpec::Continuous {
                low: vec![-2.0],
                high: vec![2.0],
            },
        };
        let mut model = config.init(&spec, &device);
        let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
        // Pendulum-like random data: cos, sin, angular velocity; torque in [-2, 2].
        let mut state = 12345u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let (mut total, mut fwd, mut bwd, mut clip, mut adam, mut obs_only) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for step in 0..warmup + steps {
            let mut obs = Vec::with_capacity(b * t * o);
            for _ in 0..b * t {
                let th = uniform() * std::f32::consts::TAU;
                obs.extend([th.cos(), th.sin(), uniform() * 16.0 - 8.0]);
            }
            let act: Vec<f32> = (0..b * t).map(|_| uniform() * 4.0 - 2.0).collect();
            let rew: Vec<f32> = (0..b * t).map(|_| -uniform() * 16.0).collect();
            let first: Vec<f32> = (0..b * t)
                .map(|i| if i % t == 0 { 1.0 } else { 0.0 })
                .collect();
            let term = vec![0.0; b * t];

            // The posterior rollout alone (forward only, graph dropped), for the breakdown.
            // Off by default: an autodiff graph that is never backwarded is cleaned up by the
            // next backward pass, which then looks slower.
            let mut observe_ms = f64::NAN;
            if with_observe {
                let s0 = Instant::now();
                let batch = SequenceTensors::from_host(
                    &obs, &act, &rew, &first, &term, b, t, o, 1, &device,
                );
                let observed = model.observe(
                    batch.obs.clone(),
                    batch.action.clone(),
                    batch.is_first.clone(),
                    None,
                    true,
                );
                let _ = observed.last.deter.into_data();
                observe_ms = s0.elapsed().as_secs_f64() * 1e3;
            }

            let t0 = Instant::now();
            let batch =
                SequenceTensors::from_host(&obs, &act, &rew, &first, &term, b, t, o, 1, &device);
            let loss = model.loss(&batch); // reads the metrics back: everything is computed
            let t1 = Instant::now();
            let grads = loss.total.backward();
            let t2 = Instant::now();
            let mut grads = GradientsParams::from_grads(grads, &model);
            let _norm = clip_global_norm(&model, &mut grads, 100.0);
            let t3 = Instant::now();
            model = optim.step(3e-4, model, grads);
            let _ = model.gru.weight.val().narrow(0, 0, 1).into_data();
            let t4 = Instant::now();
            if step >= warmup {
                let ms = |a: Instant, z: Instant| (z - a).as_secs_f64() * 1e3;
                total.push(ms(t0, t4));
                fwd.push(ms(t0, t1));
                bwd.push(ms(t1, t2));
                clip.push(ms(t2, t3));
                adam.push(ms(t3, t4));
                obs_only.push(observe_ms);
            }
        }
        let med = |v: &[f64]| quantile(v, 0.5);
        println!(
            "{{\"implementation\": \"burn 0.22.1 flex\", \"model\": \"rssm_{kind}\", \"threads\": {threads}, \"batch\": {b}, \"seq_len\": {t}, \"deter\": 200, \"median_ms\": {:.2}, \"p10_ms\": {:.2}, \"p90_ms\": {:.2}, \"updates_per_s\": {:.2}, \"phases_median_ms\": {{\"forward_loss\": {:.2}, \"observe_forward_only\": {}, \"backward\": {:.2}, \"grads_and_clip\": {:.2}, \"adam\": {:.2}}}}}",
            med(&total),
            quantile(&total, 0.1),
            quantile(&total, 0.9),
            1e3 / med(&total),
            med(&fwd),
            if with_observe {
                format!("{:.2}", med(&obs_only))
            } else {
                "null".into()
            },
            med(&bwd),
            med(&clip),
            med(&adam),
        );
    }
}
