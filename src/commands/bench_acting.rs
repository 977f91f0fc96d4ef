//! `wm bench acting`: the cost of one acting step of a rollout worker (choose the action, step
//! the environment, record the step) with a config's acting policy over its model, with the
//! model state carried through the episode (what the workers do) and, for comparison, rebuilt
//! from the last real steps at every action (the workers' acting before the state was carried).

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use wm_envs::{Action, Space};
use wm_imagine::{HistoryWindow, WorldModel};
use wm_plan::Planner;
use wm_train::AnyModel;
use wm_train::config::CollectPolicy;

/// Arguments of `wm bench acting`.
#[derive(Debug, Args)]
pub struct BenchActingArgs {
    /// Config whose model, environment and acting policy (`data.policy`) are measured.
    #[arg(long, default_value = "configs/pendulum_rssm_cem.ron")]
    pub config: std::path::PathBuf,
    /// Override a config field, as in `wm train` (repeatable).
    #[arg(long, value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Ways of keeping the model state to measure, comma-separated: `carried` (filter one real
    /// step per action, what the workers do) and `window` (re-filter the last `--window` real
    /// steps at every action: the acting of commit 01c8a97 and before, kept here only to
    /// measure it).
    #[arg(long, value_delimiter = ',', default_value = "window,carried")]
    pub memory: Vec<String>,
    /// Real steps the `window` variant re-filters per action (8 before the state was carried).
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Untimed acting steps first (each repetition).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed acting steps per repetition.
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Timed repetitions; the median, fastest and slowest are reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Seed of the model's initial weights, the environment and the policy.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object per variant instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct ActingBenchResult {
    config: String,
    env: String,
    model: String,
    policy: String,
    memory: String,
    threads: usize,
    steps: usize,
    repeats: usize,
    median_steps_per_s: f64,
    min_steps_per_s: f64,
    max_steps_per_s: f64,
    median_ms_per_step: f64,
}

/// How the model state is kept between actions.
#[allow(clippy::large_enum_variant, reason = "one value per benchmark run")]
enum Memory {
    /// `wm_train::acting::ActingPolicy`: one filter step per real step.
    Carried(wm_train::acting::ActingPolicy<AnyModel>),
    /// The old acting, re-implemented: the last `n` real steps re-filtered at every action.
    Window {
        window: HistoryWindow,
        planner: Option<wm_plan::AnyPlanner>,
        explore: bool,
    },
}

pub fn acting(args: &BenchActingArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steps > 0 && args.repeats > 0 && args.window > 0,
        "--steps, --repeats and --window must be positive"
    );
    for memory in &args.memory {
        anyhow::ensure!(
            memory == "carried" || memory == "window",
            "unknown --memory `{memory}`: expected carried or window"
        );
    }
    let config = wm_train::TrainConfig::load(&args.config, &args.set)?;
    anyhow::ensure!(
        !matches!(config.data.policy, CollectPolicy::Random),
        "{}: data.policy is Random; acting needs a Planner or an Actor policy",
        args.config.display()
    );
    let device = wm_backend::DeviceSpec::Cpu.init()?;
    device.seed(args.seed);
    let mut env = wm_envs::make(&config.env)?;
    let spec = wm_train::data::model_spec(env.as_ref());
    let obs_dim = spec.obs_dim;
    // Untrained weights: the cost of acting does not depend on their values (a fixed number of
    // candidates, iterations and horizon steps), and no run folder is needed.
    let model = config
        .model
        .init(&spec, wm_models::Normalizer::identity(obs_dim), &device);
    let policy_net = match &config.data.policy {
        CollectPolicy::Actor(agent) => Some(
            wm_agent::ActorCritic::new(
                agent,
                model.feature_dim(),
                &spec.action,
                &device.clone().autodiff(),
            )
            .policy(),
        ),
        _ => None,
    };
    let policy_name = match &config.data.policy {
        CollectPolicy::Planner(p) => format!(
            "{:?} (H {}, N {}, K {}, I {})",
            p.kind, p.horizon, p.candidates, p.elites, p.iterations
        ),
        CollectPolicy::Actor(a) => format!("actor {:?}", a.hidden),
        CollectPolicy::Random => unreachable!("checked above"),
    };
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if !args.json {
        println!(
            "| config | env | model | policy | memory | threads | steps | median steps/s | min | max | median ms/step |"
        );
        println!("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    }
    for name in &args.memory {
        let mut memory = match name.as_str() {
            "carried" => Memory::Carried(wm_train::acting::ActingPolicy::new(
                &config.data.policy,
                obs_dim,
                env.action_space(),
                args.seed,
                device.clone(),
                true,
            )),
            _ => Memory::Window {
                window: HistoryWindow::new(args.window, obs_dim, env.action_space().width()),
                planner: match &config.data.policy {
                    CollectPolicy::Planner(p) => Some(p.init(&spec.action, args.seed)),
                    _ => None,
                },
                explore: true,
            },
        };
        let mut rates = Vec::with_capacity(args.repeats);
        for repeat in 0..args.repeats {
            memory.reset(&env.reset(Some(args.seed.wrapping_add(repeat as u64))));
            let mut start = Instant::now();
            for step_idx in 0..args.warmup + args.steps {
                if step_idx == args.warmup {
                    start = Instant::now();
                }
                let action = memory.act(&model, policy_net.as_ref(), env.action_space(), &device);
                let step = env
                    .step(&action)
                    .with_context(|| format!("stepping {} at step {step_idx}", env.id()))?;
                memory.observe(&action, &step.obs);
                if step.terminated || step.truncated {
                    memory.reset(&env.reset(None));
                }
            }
            rates.push(args.steps as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        let result = ActingBenchResult {
            config: args.config.display().to_string(),
            env: env.id().to_string(),
            model: model.kind().to_string(),
            policy: policy_name.clone(),
            memory: if name == "window" {
                format!("window of {} (rebuilt per action)", args.window)
            } else {
                "carried".into()
            },
            threads,
            steps: args.steps,
            repeats: args.repeats,
            median_steps_per_s: median,
            min_steps_per_s: rates[0],
            max_steps_per_s: rates[rates.len() - 1],
            median_ms_per_step: 1e3 / median,
        };
        if args.json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} x {} | {:.2} | {:.2} | {:.2} | {:.1} |",
                result.config,
                result.env,
                result.model,
                result.policy,
                result.memory,
                result.threads,
                result.repeats,
                result.steps,
                result.median_steps_per_s,
                result.min_steps_per_s,
                result.max_steps_per_s,
                result.median_ms_per_step
            );
        }
    }
    Ok(())
}

impl Memory {
    fn reset(&mut self, obs: &[f32]) {
        match self {
            Memory::Carried(actor) => actor.reset(obs),
            Memory::Window {
                window, planner, ..
            } => {
                window.reset(obs);
                if let Some(planner) = planner {
                    planner.reset();
                }
            }
        }
    }

    fn observe(&mut self, action: &Action, obs: &[f32]) {
        match self {
            Memory::Carried(actor) => actor.observe(action, obs),
            Memory::Window { window, .. } => window.push(&action.to_f32_vec(), obs),
        }
    }

    fn act(
        &mut self,
        model: &AnyModel,
        policy_net: Option<&wm_agent::Actor>,
        space: Space,
        device: &wm_backend::Device,
    ) -> Action {
        match self {
            Memory::Carried(actor) => actor.act(Some(model), policy_net),
            Memory::Window {
                window,
                planner,
                explore,
            } => {
                let context = window.context(device);
                match (planner, policy_net) {
                    (Some(planner), _) => planner.plan_one(model, &context),
                    (None, Some(net)) => {
                        let dist = net.forward(model.features(&model.start(&context, false)));
                        let action = net.to_raw(if *explore { dist.sample() } else { dist.mode() });
                        let values = action
                            .into_data()
                            .convert::<f32>()
                            .try_to_vec::<f32>()
                            .expect("f32 actions");
                        match space {
                            Space::Discrete { .. } => Action::Discrete(values[0] as usize),
                            Space::Box { .. } => Action::Continuous(values),
                        }
                    }
                    (None, None) => unreachable!("an Actor policy has its network"),
                }
            }
        }
    }
}
