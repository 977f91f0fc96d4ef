//! Times one actor-critic update (imagination + losses + Adam) over an untrained Pendulum-sized
//! cVAE: `cargo run --release -p wm-agent --example agent_step_time [starts] [horizon]`;
//! `PROBE=1` also times the imagination alone.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use wm_agent::{ActorCritic, ActorCriticConfig};
use wm_imagine::{OneStepState, WorldModel};
use wm_models::{ActionSpec, CvaeConfig, ModelSpec, Normalizer, TransitionModelConfig};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let starts = args.next().unwrap_or(128);
    let horizon = args.next().unwrap_or(15);
    let device = Device::flex();
    device.seed(0);
    let spec = ModelSpec {
        obs_dim: 3,
        action: ActionSpec::Continuous {
            low: vec![-2.0],
            high: vec![2.0],
        },
    };
    let model = TransitionModelConfig::Cvae(CvaeConfig {
        hidden: vec![128, 128],
        latent_dim: 4,
        ..Default::default()
    })
    .init(&spec, Normalizer::identity(3), &device);
    let config = ActorCriticConfig {
        horizon,
        ..Default::default()
    };
    let mut agent = ActorCritic::new(
        &config,
        model.feature_dim(),
        &spec.action,
        &device.clone().autodiff(),
    );
    let obs: OneStepState =
        Tensor::<2>::random([starts, 3], Distribution::Normal(0.0, 1.0), &device).into();
    if std::env::var("PROBE").is_ok() {
        let actor = agent.policy();
        let t = Instant::now();
        let mut state = obs.clone();
        for _ in 0..horizon {
            let f = model.features(&state);
            let a = actor.forward(f).sample();
            let (next, p) = model.step(&state, actor.to_raw(a), true);
            let _ = p.reward.into_data();
            state = next;
        }
        println!(
            "imagination alone: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    for _ in 0..3 {
        agent.update(&model, &obs);
    }
    let n = 10;
    let t = Instant::now();
    for _ in 0..n {
        agent.update(&model, &obs);
    }
    println!(
        "{starts} starts x {horizon} steps: {:.1} ms per update",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
