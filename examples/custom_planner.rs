//! Plugging a planner of your own into a world model: random-shooting model-predictive control
//! of the real Pendulum-v1, written against `wm_imagine::ModelEnv` only.
//!
//! ```text
//! cargo run --release --example custom_planner            # trains a small Gaussian MLP inline
//! cargo run --release --example custom_planner runs/X     # plans with a trained run's model
//! ```
//!
//! The planner (`RandomShooting`, a few dozen lines) is generic over `M: WorldModel`, so the same
//! code plans with the cVAE, the MLP baselines or the RSSM of a run folder.

use std::time::Instant;

use anyhow::{Context as _, Result};
use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::{Device, Distribution, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wm_envs::Action;
use wm_imagine::{Context, HistoryWindow, ModelEnv, WorldModel};
use wm_models::{AnyTransitionModel, GaussianMlpConfig, Normalizer, TransitionModelConfig};
use wm_replay::ReplayBuffer;
use wm_train::AnyModel;
use wm_train::data::{all_transitions, collect_episodes, model_spec, replay_spec, to_tensors};

// ----------------------------------------------------------------------------------------------
// The user's planner: all it sees is a batched environment of observations and rewards.
// ----------------------------------------------------------------------------------------------

/// Random shooting: try `candidates` uniformly random action sequences of `horizon` steps in the
/// model, keep the first action of the one with the highest predicted return.
struct RandomShooting {
    candidates: usize,
    horizon: usize,
    low: f64,
    high: f64,
}

impl RandomShooting {
    fn plan<M: WorldModel>(&self, env: &mut ModelEnv<M>, context: Context) -> Vec<f32> {
        let (n, h) = (self.candidates, self.horizon);
        let device = context.obs().device();
        let width = env.model().action_spec().raw_width();
        env.reset_repeated(context, n); // the current state, n times
        let actions = Tensor::<3>::random(
            [n, h, width],
            Distribution::Uniform(self.low, self.high),
            &device,
        );
        let mut total = Tensor::<1>::zeros([n], &device);
        let mut alive = Tensor::<1>::ones([n], &device);
        for t in 0..h {
            let step = env.step(actions.clone().narrow(1, t, 1).reshape([n, width]));
            total = total + step.reward * alive.clone(); // rewards count until a predicted end
            alive = alive * step.continue_prob;
        }
        let best = total.argmax(0);
        let first = actions.select(0, best).narrow(1, 0, 1).reshape([width]);
        first.into_data().try_to_vec::<f32>().expect("f32 actions")
    }
}

// ----------------------------------------------------------------------------------------------
// Running it on the real environment.
// ----------------------------------------------------------------------------------------------

/// One real Pendulum episode; `policy` picks each action from the recent real steps.
fn episode(seed: u64, mut policy: impl FnMut(&HistoryWindow) -> Vec<f32>) -> Result<f64> {
    let mut real = wm_envs::make("pendulum")?;
    // The RSSM filters the last 16 real steps into its state; one-step models use the last one.
    let mut window = HistoryWindow::new(
        16,
        real.observation_space().width(),
        real.action_space().width(),
    );
    window.reset(&real.reset(Some(seed)));
    let mut total = 0.0;
    loop {
        let action = policy(&window);
        let step = real.step(&Action::Continuous(action.clone()))?;
        total += step.reward;
        window.push(&action, &step.obs);
        if step.terminated || step.truncated {
            return Ok(total);
        }
    }
}

/// Model-predictive control: plan in `model` at every real step, act, repeat.
fn mpc<M: WorldModel>(
    model: M,
    planner: &RandomShooting,
    seed: u64,
    device: &Device,
) -> Result<f64> {
    let mut env = ModelEnv::new(model, false);
    episode(seed, |window| {
        planner.plan(&mut env, window.context(device))
    })
}

/// A Gaussian MLP trained for a few hundred updates on random Pendulum episodes.
fn train_small_model(device: &Device) -> Result<AnyTransitionModel> {
    let mut env = wm_envs::make("pendulum")?;
    let mut buffer = ReplayBuffer::new(replay_spec(env.as_ref()), 10_000)?;
    collect_episodes(env.as_mut(), 0, 4_000, &mut buffer)?;
    let data = all_transitions(&buffer, usize::MAX);
    let normalizer = Normalizer::fit(&data.obs, &data.next_obs, &data.rewards, data.obs_dim);
    let training = device.clone().autodiff();
    let config = TransitionModelConfig::Gaussian(GaussianMlpConfig {
        hidden: vec![64, 64],
        ..Default::default()
    });
    let mut model = config.init(&model_spec(env.as_ref()), normalizer, &training);
    let mut optimizer = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for update in 1..=600 {
        let batch = buffer.sample_transitions(&mut rng, 256)?;
        let batch =
            wm_train::Batch::Transitions(to_tensors(&batch, 0..batch.batch_size, &training));
        let (next, outcome) =
            wm_train::update_step(model, &mut optimizer, &batch, 3e-3, 100.0, false);
        model = next;
        if update % 200 == 0 {
            println!("  update {update}: loss {:.3}", outcome.total);
        }
    }
    Ok(model.valid())
}

fn main() -> Result<()> {
    let device = Device::flex();
    device.seed(0);
    let planner = RandomShooting {
        candidates: 128,
        horizon: 15,
        low: -2.0,
        high: 2.0,
    };
    let started = Instant::now();
    let (name, planned) = match std::env::args().nth(1) {
        Some(run) => {
            let (_, model, _, update) = wm_train::load_for_eval(run.as_ref(), &device)
                .with_context(|| format!("loading the run {run}"))?;
            let name = format!("{} from {run} (update {update})", model.kind());
            let planned = match model {
                AnyModel::Transition(model) => mpc(model, &planner, 7, &device)?,
                AnyModel::Rssm(model) => mpc(model, &planner, 7, &device)?,
            };
            (name, planned)
        }
        None => {
            println!("training a Gaussian MLP on 4000 random Pendulum steps...");
            let model = train_small_model(&device)?;
            println!("  trained in {:.1}s", started.elapsed().as_secs_f64());
            (
                "gaussian_mlp trained inline".to_string(),
                mpc(model, &planner, 7, &device)?,
            )
        }
    };
    let space = wm_envs::make("pendulum")?.action_space();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let random = episode(7, |_| space.sample(&mut rng).to_f32_vec())?;
    println!("model: {name}");
    println!(
        "Pendulum-v1 return (seed 7): random shooting {planned:.1} ({} x {} steps), random policy {random:.1}",
        planner.candidates, planner.horizon
    );
    println!("total time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
