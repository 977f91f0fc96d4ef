//! The subcommands' implementations. Each returns `anyhow::Result`; `main` prints the chain.

mod bench;
pub(crate) mod bench_acting;
pub(crate) mod bench_curves;
pub(crate) mod bench_estimators;
mod device;
mod env;
mod export;
mod play;
mod replay;
mod solve;
mod train;

use crate::cli::{BenchCommand, Cli, Command, EnvCommand, ReplayCommand};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Env(EnvCommand::Rollout(args)) => env::rollout(&args),
        Command::Env(EnvCommand::List) => env::list(),
        Command::Bench(BenchCommand::Env(args)) => bench::env_steps(&args),
        Command::Bench(BenchCommand::Update(args)) => bench::update(&args),
        Command::Bench(BenchCommand::Ops(args)) => bench::ops(&args),
        Command::Bench(BenchCommand::Pipeline(args)) => bench::pipeline(&args),
        Command::Bench(BenchCommand::Acting(args)) => bench_acting::acting(&args),
        Command::Bench(BenchCommand::Solve(args)) => solve::solve(&args),
        Command::Bench(BenchCommand::Estimators(args)) => bench_estimators::estimators_bench(&args),
        Command::Train(args) => train::train(&args),
        Command::Eval(args) => train::eval(&args),
        Command::Plot(args) => train::plot(&args),
        Command::Play(args) => play::play(&args),
        Command::Export(args) => export::export(&args),
        Command::Device(args) => device::check(&args),
        Command::Replay(ReplayCommand::Check(args)) => replay::check(&args),
        Command::Replay(ReplayCommand::Recover(args)) => replay::recover(&args),
    }
}
