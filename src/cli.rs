//! Command-line arguments (clap derive). Every flag carries the help text shown by `--help`.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// worldmodel: train and use variational world models (conditional VAE, RSSM) for model-based RL.
#[derive(Debug, Parser)]
#[command(name = "wm", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `wm`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with the built-in environments (roll out, list).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Measure throughput; results belong in BENCHMARKS.md.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Train a world model: collect data, train with Adam, evaluate on a schedule, save checkpoints.
    ///
    /// Writes runs/{env}__{model}__{seed}__{unixtime}/ with the resolved config, TensorBoard
    /// events (`tensorboard --logdir runs`), the checkpoint, the replay files and eval.json.
    Train(TrainArgs),
    /// Evaluate a run's checkpoint on its held-out episodes: NLL (IWAE for the cVAE), one-step and
    /// open-loop RMSE, reward error, termination accuracy. Prints a table, writes eval.json.
    Eval(EvalArgs),
    /// Draw imagined against real trajectories for a few held-out episodes (PNG, also sent to TensorBoard).
    Plot(PlotArgs),
    /// Run a trained run's acting policy (its actor, or its planner over the trained model, as
    /// its config says; no exploration) on the real environment: per-episode returns and lengths
    /// and their mean, and optionally a rendering of each step (ASCII lines or PNG frames).
    Play(PlayArgs),
    /// Write a run's weights to a file other tools read: the world model, the actor network
    /// (when the run trained one) and the normaliser's statistics, as safetensors in PyTorch's
    /// layout (tensor names and shapes per model kind: docs/export.md).
    Export(ExportArgs),
    /// Show the devices this build supports and check that one works (a tiny forward and backward pass).
    Device(DeviceArgs),
    /// Check a run's replay files, or keep the intact part of a corrupt one.
    #[command(subcommand)]
    Replay(ReplayCommand),
}

/// `wm replay ...`
#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Read a run's replay files without changing them and report the intact episodes and the
    /// first damaged record, if any. Exits 1 when a file is corrupt; a torn final record (an
    /// append cut short by a kill) is not corruption: a writer cuts it off when it opens the file.
    Check(ReplayArgs),
    /// Keep the intact episodes of a run's damaged replay files: cut each file at its first
    /// damaged record (everything after it is lost). Refused while a run writes the files.
    Recover(ReplayArgs),
}

/// Arguments of `wm replay check` and `wm replay recover`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The run folder (its replay_train.wmrb and replay_eval.wmrb).
    #[arg(value_name = "RUN_DIR")]
    pub run: std::path::PathBuf,
}

/// `wm env ...`
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Step an environment and print one JSON object per step (JSON Lines) on stdout.
    ///
    /// Each line is {"env","episode","t","obs","action","reward","terminated","truncated","next_obs"};
    /// the first step of each episode also carries "state", the simulator's internal float64 state
    /// after reset, so that scripts/replay_in_gymnasium.py can replay the episode in Gymnasium.
    /// After an episode ends the environment is reset (the first reset uses --seed, later ones
    /// continue its random stream, as in Gymnasium) until --steps steps have been printed.
    Rollout(RolloutArgs),
    /// List the built-in environments with their spaces and time limits.
    List,
}

/// Arguments of `wm env rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Environment: `cartpole` (CartPole-v1) or `pendulum` (Pendulum-v1).
    #[arg(long)]
    pub env: String,
    /// Seed of the first reset and of the policy's random actions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of steps to print in all, across episodes.
    #[arg(long)]
    pub steps: u64,
    /// Acting policy.
    #[arg(long, value_enum, default_value_t = PolicyKind::Random)]
    pub policy: PolicyKind,
}

/// A policy that can act in `wm env rollout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    /// Uniformly random actions from the action space.
    Random,
}

/// `wm bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Environment steps per second (random actions, resets included); compare with
    /// scripts/bench/env_gymnasium.py, which times Gymnasium the same way (scripts/bench/env.sh runs both).
    Env(BenchEnvArgs),
    /// Gradient updates per second of a model (the cVAE by default): the exact step `wm train`
    /// runs (batch sampling, loss, backward, global-norm clipping, Adam). Compare with
    /// scripts/bench/{cvae,rssm}_torch.py, the same models in PyTorch (scripts/bench/models.sh
    /// runs both sides).
    Update(BenchUpdateArgs),
    /// Time of single tensor operations, fused (crates/kernels: SiLU, sigmoid, tanh, softplus,
    /// the GRU gate) against their composed versions on the same device: the forward pass alone
    /// and forward plus backward, alternating the two versions in rounds so that both see the
    /// same machine load.
    Ops(BenchOpsArgs),
    /// Throughput of `wm train`'s rollout/learner pipeline with 1 and 2 workers, and of the
    /// single-threaded collect-then-train loop (the lock-step mode), at a learner-bound and a
    /// data-bound replay ratio: environment steps/s, updates/s, learner busy fraction.
    Pipeline(BenchPipelineArgs),
    /// Acting steps per second of a rollout worker with a config's acting policy (planner or
    /// actor) over its model, with the model state carried through the episode and, for
    /// comparison, rebuilt from the last real steps at every action (see BENCHMARKS.md).
    Acting(crate::commands::bench_acting::BenchActingArgs),
    /// Closed-loop control over several seeds: trains each seed with a config whose acting
    /// policy is a planner or the actor, reads its evaluation returns against environment
    /// steps, and writes a Markdown table, solve.json and a PNG of the curves with their spread
    /// (solve.md, solve.json, solve.png under --out).
    Solve(BenchSolveArgs),
    /// Gradient estimators of a categorical latent (REINFORCE with and without baselines,
    /// straight-through, Gumbel-softmax, straight-through Gumbel) on a 4-class toy problem,
    /// against the exact gradient by enumeration: bias, variance, signal-to-noise ratio and
    /// time per gradient (see BENCHMARKS.md).
    Estimators(crate::commands::bench_estimators::BenchEstimatorsArgs),
}

/// Arguments of `wm bench solve`.
#[derive(Debug, Args)]
pub struct BenchSolveArgs {
    /// `pendulum` or `cartpole`: its default closed-loop config (configs/pendulum_cvae_cem.ron,
    /// configs/cartpole_cvae_actor.ron) and the planning issue's target (-200 within 3,000
    /// steps; 500 within 2,000 steps).
    #[arg(long, required_unless_present = "config")]
    pub env: Option<String>,
    /// A closed-loop config instead (needs --target and --budget unless --env names them).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Number of seeds.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// The first seed (seeds are consecutive).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Override a config field, as in `wm train` (repeatable).
    #[arg(long, value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// The target mean evaluation return (may be negative: `--target -200`).
    #[arg(long, allow_negative_numbers = true)]
    pub target: Option<f64>,
    /// The environment-step budget for reaching the target.
    #[arg(long)]
    pub budget: Option<u64>,
    /// Folder for the runs and the results (a subfolder per invocation).
    #[arg(long, default_value = "runs/solve", value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Learner device, as in `wm train`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Arguments of `wm bench pipeline`.
#[derive(Debug, Args)]
pub struct BenchPipelineArgs {
    /// Training config to run (its model and environment).
    #[arg(long, default_value = "configs/cartpole_cvae.ron")]
    pub config: std::path::PathBuf,
    /// Updates per measured run.
    #[arg(long, default_value_t = 1500)]
    pub updates: usize,
    /// Replay ratios (updates per environment step) to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.02,0.001")]
    pub ratios: Vec<f64>,
    /// The limiter's tolerance in environment steps (small, so the achieved ratio shows).
    #[arg(long, default_value_t = 100)]
    pub tolerance_steps: usize,
    /// Worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
}

/// Arguments of `wm bench update`.
#[derive(Debug, Args)]
pub struct BenchUpdateArgs {
    /// Model: `cvae`, `gaussian_mlp`, `deterministic_mlp`, `ensemble` (5 members),
    /// `rssm_gaussian` or `rssm_categorical`.
    #[arg(long, default_value = "cvae")]
    pub model: String,
    /// Transitions per update (one-step models) or sequences per update (RSSM; try 16).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Steps per sequence (RSSM only).
    #[arg(long, default_value_t = 50)]
    pub seq_len: usize,
    /// Width of each of the two hidden layers (one-step models), or the RSSM's hidden width.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// The RSSM's deterministic state width.
    #[arg(long, default_value_t = 200)]
    pub deter: usize,
    /// Untimed updates first.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Timed updates; the median is reported.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Device: `cpu`, `tch-cpu`, `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wm bench ops`.
#[derive(Debug, Args)]
pub struct BenchOpsArgs {
    /// Rows of the input tensor.
    #[arg(long, default_value_t = 256)]
    pub rows: usize,
    /// Columns of the input tensor.
    #[arg(long, default_value_t = 256)]
    pub cols: usize,
    /// Rounds; each times both versions, one after the other.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Timed calls of each version per round (after one untimed call); the median over all
    /// rounds is reported.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Device: `cpu`, `tch-cpu`, `cuda[:N]` (off flex both versions are the composed ones).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Operations to time, comma-separated: `silu`, `sigmoid`, `tanh`, `softplus`, `gru_gate`
    /// (the GRU gate takes `[rows, 3 cols]` pre-activations and a `[rows, cols]` state).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "silu,sigmoid,tanh,softplus,gru_gate"
    )]
    pub ops: Vec<String>,
    /// Print one JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wm bench env`.
#[derive(Debug, Args)]
pub struct BenchEnvArgs {
    /// Environment: `cartpole` or `pendulum`.
    #[arg(long, default_value = "cartpole")]
    pub env: String,
    /// Steps per timed repetition.
    #[arg(long, default_value_t = 1_000_000)]
    pub steps: u64,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Seed of the resets and the random actions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wm train`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "resume"])))]
pub struct TrainArgs {
    /// Training config (RON), e.g. configs/cartpole_cvae.ron.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Continue the run in this folder from its latest checkpoint, with its config and data
    /// (`--set schedule.updates=N` extends it; the changed config is saved back).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["seed"])]
    pub resume: Option<std::path::PathBuf>,
    /// With --resume: collect new replay files (a new prefill, new held-out episodes) when the
    /// run's are missing; without it a missing replay file is an error.
    #[arg(long, requires = "resume")]
    pub new_replay: bool,
    /// Override a config field: `--set optim.lr=0.0003 --set model.beta=0.5` (repeatable).
    #[arg(long, value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Override the config's seed (data collection, initialisation, batches).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Learner device: `cpu` (burn's flex backend), `tch-cpu` or `cuda[:N]` (builds with the `tch` feature).
    /// The rollout workers act on `cpu` whatever it is, with the learner's weights copied there.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Folder under which run folders are created.
    #[arg(long, default_value = "runs", value_name = "DIR")]
    pub runs_dir: std::path::PathBuf,
    /// Hide the progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
    /// One rollout worker in lock-step with the learner: the same seed gives the same numbers
    /// bit for bit (same as `--set pipeline.deterministic=true`).
    #[arg(long, conflicts_with = "resume")]
    pub deterministic: bool,
}

/// Arguments of `wm eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run folder to evaluate (its checkpoint, config and held-out episodes).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: std::path::PathBuf,
    /// Device to evaluate on (any backend can read any checkpoint).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Samples for the likelihood estimates (comma-separated): importance samples of the cVAE's
    /// IWAE bound, particles of the RSSM's predictive and sequence bound; default: the config's.
    #[arg(long, value_delimiter = ',')]
    pub iwae_samples: Option<Vec<usize>>,
    /// Another run to compare with on this run's held-out episodes (one protocol for both:
    /// filtered from each episode's start, then imagined under the true actions), e.g. an RSSM
    /// run against a cVAE run of the same env.
    #[arg(long, value_name = "OTHER_RUN_DIR")]
    pub compare: Option<std::path::PathBuf>,
    /// Where to write the metrics; default RUN_DIR/eval.json. On a read-only run folder the
    /// default is skipped with a note.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// Real episodes played with the run's acting policy (its actor, or its planner) for the
    /// mean return, on the seeds of the trainer's policy evaluation; default: the config's
    /// eval.policy_episodes, or 5 when that is 0. 0 skips them; a run that acted randomly has none.
    #[arg(long)]
    pub policy_episodes: Option<usize>,
}

/// How `wm play` renders the episodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderKind {
    /// One line per step: the cart on its track with the pole, or the pendulum's dial, and the
    /// numbers (stdout, or one episode_NNN.txt per episode under --out).
    Ascii,
    /// One PNG frame per step, episode_NNN_step_NNNN.png under --out (CartPole and Pendulum
    /// variants only).
    Png,
}

/// Arguments of `wm play`.
#[derive(Debug, Args)]
pub struct PlayArgs {
    /// The run folder (its config, checkpoint and, for the actor policy, the trained actor).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: std::path::PathBuf,
    /// Episodes to play.
    #[arg(long, default_value_t = 5)]
    pub episodes: usize,
    /// Reset seed of the first episode (the next ones use seed + 1, seed + 2, ...).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Render each step.
    #[arg(long, value_enum)]
    pub render: Option<RenderKind>,
    /// Folder for the rendering (created; needed for `--render png`).
    #[arg(long, value_name = "DIR", requires = "render")]
    pub out: Option<std::path::PathBuf>,
    /// Device to run the model and the actor on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// File formats of `wm export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// safetensors (Hugging Face), written with burn-store; `torch.nn.Linear` takes the weights
    /// as they are.
    Safetensors,
}

/// Arguments of `wm export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run folder (its config and checkpoint).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: std::path::PathBuf,
    /// The file format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Output file (must not exist); default RUN_DIR/export.safetensors.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// Also write the exported cVAE's (and actor's) predictions for seeded inputs as JSON to
    /// FILE, to check another implementation's loader against (scripts/bench/export_torch.py).
    #[arg(long, value_name = "FILE")]
    pub reference: Option<std::path::PathBuf>,
    /// Input rows of --reference.
    #[arg(long, default_value_t = 16, requires = "reference")]
    pub reference_rows: usize,
}

/// Arguments of `wm plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The run folder (its checkpoint and held-out episodes).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: std::path::PathBuf,
    /// How many held-out episodes to draw (the longest ones).
    #[arg(long, default_value_t = 3)]
    pub episodes: usize,
    /// Steps to imagine per episode.
    #[arg(long, default_value_t = 100)]
    pub horizon: usize,
    /// Another run whose model is drawn too (blue), on this run's held-out episodes.
    #[arg(long, value_name = "OTHER_RUN_DIR")]
    pub compare: Option<std::path::PathBuf>,
    /// Output file; default RUN_DIR/open_loop.png.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// Device to run the model on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Arguments of `wm device`.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Device to check: `cpu` (burn's flex backend), `tch-cpu` or `cuda[:N]` (builds with the `tch` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Prints a clap error as one line (help and version requests print in full) and returns the
/// exit code: 0 for help and version, 2 for usage errors.
pub fn report_usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Printing help can only fail on a closed stdout, where there is no one to tell.
            let _ = error.print();
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            eprintln!("{} (see `wm --help`)", one_line(&error));
            ExitCode::from(2)
        }
    }
}

/// A clap error in one line. Most fit in their first line; a missing argument's first line
/// ("the following required arguments were not provided:") is followed by the arguments, one
/// per indented line, and those are kept.
fn one_line(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or("invalid arguments").to_string();
    if error.kind() != clap::error::ErrorKind::MissingRequiredArgument {
        return first;
    }
    let missing: Vec<&str> = lines
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .collect();
    if missing.is_empty() {
        first
    } else {
        format!("{} {}", first, missing.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rollout_parses_documented_flags() {
        let cli = Cli::try_parse_from([
            "wm", "env", "rollout", "--env", "pendulum", "--seed", "7", "--steps", "10",
            "--policy", "random",
        ])
        .expect("documented flags should parse");
        let Command::Env(EnvCommand::Rollout(args)) = cli.command else {
            panic!("not a rollout: {cli:?}")
        };
        assert_eq!(
            (args.env.as_str(), args.seed, args.steps, args.policy),
            ("pendulum", 7, 10, PolicyKind::Random)
        );
    }

    #[test]
    fn missing_argument_message_names_the_argument() {
        let error = Cli::try_parse_from(["wm", "env", "rollout", "--env", "cartpole"]).unwrap_err();
        let message = one_line(&error);
        assert!(
            message.contains("not provided") && message.contains("--steps <STEPS>"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn negative_numbers_parse_as_values() {
        let cli = Cli::try_parse_from([
            "wm", "bench", "solve", "--config", "c.ron", "--target", "-200", "--budget", "3000",
        ])
        .expect("a negative target should parse");
        let Command::Bench(BenchCommand::Solve(args)) = cli.command else {
            panic!("not bench solve: {cli:?}")
        };
        assert_eq!(args.target, Some(-200.0));
    }

    #[test]
    fn replay_commands_take_the_run_folder() {
        let cli = Cli::try_parse_from(["wm", "replay", "recover", "runs/x"]).expect("parses");
        let Command::Replay(ReplayCommand::Recover(args)) = cli.command else {
            panic!("not replay recover: {cli:?}")
        };
        assert_eq!(args.run, std::path::PathBuf::from("runs/x"));
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let error = Cli::try_parse_from(["wm", "env", "rollout", "--nope"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
    }
}
