//! Closed-loop tests: planners over [`TrueDynamics`] controlling the real environments.

use super::*;
use burn::tensor::TensorData;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wm_envs::{CartPole, Env, Pendulum};

/// One real episode of at most `max_steps` steps; returns `(steps, total reward, terminated)`.
fn episode(
    env: &mut dyn Env,
    seed: u64,
    max_steps: usize,
    mut act: impl FnMut(&[f32]) -> Action,
) -> (usize, f64, bool) {
    let mut obs = env.reset(Some(seed));
    let mut total = 0.0;
    for step in 1..=max_steps {
        let s = env.step(&act(&obs)).expect("valid action");
        total += s.reward;
        obs = s.obs;
        if s.terminated || s.truncated {
            return (step, total, s.terminated);
        }
    }
    (max_steps, total, false)
}

/// A closed-loop episode planned over the true dynamics.
fn planned_episode(
    planner: &mut AnyPlanner,
    env: &mut dyn Env,
    model: &TrueDynamics,
    seed: u64,
    max_steps: usize,
) -> (usize, f64, bool) {
    let device = wm_backend::test_device();
    let o = model.obs_dim();
    planner.reset();
    episode(env, seed, max_steps, |obs| {
        let context = Context::new(Tensor::from_data(
            TensorData::new(obs.to_vec(), [1, o]),
            &device,
        ));
        planner.plan_one(model, &context)
    })
}

fn random_pendulum_return(seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    episode(&mut Pendulum::new(), seed, 200, |_| {
        Action::Continuous(vec![rng.random_range(-2.0f32..=2.0)])
    })
    .1
}

fn pendulum_config(kind: PlannerKind) -> PlannerConfig {
    PlannerConfig {
        horizon: 20,
        candidates: 200,
        elites: 20,
        iterations: 4,
        ..PlannerConfig::defaults(kind)
    }
}

fn cartpole_config(kind: PlannerKind) -> PlannerConfig {
    PlannerConfig {
        horizon: 12,
        candidates: 200,
        elites: 20,
        iterations: 4,
        ..PlannerConfig::defaults(kind)
    }
}

/// Starts at 159 degrees from upright, nearly at rest.
const PENDULUM_SEED: u64 = 4;

/// The episode must start far from upright for the test to be a swing-up.
fn assert_hanging_down(seed: u64) {
    let obs = Pendulum::new().reset(Some(seed));
    eprintln!("pendulum seed {seed} starts at {obs:?}");
    assert!(
        obs[0] < -0.5,
        "seed {seed} does not start hanging down: {obs:?}"
    );
}

#[test]
fn cem_on_the_true_dynamics_swings_pendulum_up() {
    let model = TrueDynamics::pendulum();
    let mut planner = pendulum_config(PlannerKind::Cem).init(model.action_spec(), 1);
    let (steps, total, _) = planned_episode(
        &mut planner,
        &mut Pendulum::new(),
        &model,
        PENDULUM_SEED,
        200,
    );
    let random = random_pendulum_return(PENDULUM_SEED);
    assert_hanging_down(PENDULUM_SEED);
    eprintln!(
        "pendulum seed {PENDULUM_SEED}: CEM return {total:.1} in {steps} steps, random {random:.1}"
    );
    assert_eq!(steps, 200);
    assert!(random < -700.0, "random policy return {random}");
    assert!(total >= -400.0, "CEM return {total}");
}

#[test]
fn mppi_on_the_true_dynamics_swings_pendulum_up() {
    let model = TrueDynamics::pendulum();
    let mut planner = pendulum_config(PlannerKind::Mppi).init(model.action_spec(), 1);
    let (steps, total, _) = planned_episode(
        &mut planner,
        &mut Pendulum::new(),
        &model,
        PENDULUM_SEED,
        200,
    );
    let random = random_pendulum_return(PENDULUM_SEED);
    assert_hanging_down(PENDULUM_SEED);
    eprintln!(
        "pendulum seed {PENDULUM_SEED}: MPPI return {total:.1} in {steps} steps, random {random:.1}"
    );
    assert_eq!(steps, 200);
    assert!(random < -700.0, "random policy return {random}");
    assert!(total >= -400.0, "MPPI return {total}");
}

#[test]
fn cem_on_the_true_dynamics_balances_cartpole() {
    let model = TrueDynamics::cartpole();
    let mut planner = cartpole_config(PlannerKind::Cem).init(model.action_spec(), 1);
    let (steps, _, terminated) =
        planned_episode(&mut planner, &mut CartPole::new(), &model, 3, 200);
    eprintln!("cartpole: CEM {steps} steps, terminated {terminated}");
    assert!(!terminated && steps == 200, "CEM balanced {steps} steps");
}

#[test]
fn mppi_on_the_true_dynamics_balances_cartpole() {
    let model = TrueDynamics::cartpole();
    let mut planner = cartpole_config(PlannerKind::Mppi).init(model.action_spec(), 1);
    let (steps, _, terminated) =
        planned_episode(&mut planner, &mut CartPole::new(), &model, 3, 200);
    eprintln!("cartpole: MPPI {steps} steps, terminated {terminated}");
    assert!(!terminated && steps == 200, "MPPI balanced {steps} steps");
}

/// The closed-loop CartPole config (configs/cartpole_cvae_cem.ron) over the true dynamics:
/// a 25-step horizon balances the whole 500-step episode (a 15-step one with 100 candidates
/// lost the pole after 236 and 301 steps on two of three seeds when this was written).
#[test]
fn cem_with_the_closed_loop_config_balances_cartpole_for_the_full_episode() {
    let model = TrueDynamics::cartpole();
    for seed in 0..2 {
        let config = PlannerConfig {
            horizon: 25,
            candidates: 200,
            elites: 20,
            iterations: 3,
            ..PlannerConfig::cem()
        };
        let mut planner = config.init(model.action_spec(), seed);
        let (steps, _, terminated) =
            planned_episode(&mut planner, &mut CartPole::new(), &model, 100 + seed, 500);
        assert!(
            !terminated && steps == 500,
            "seed {seed}: CEM balanced {steps} steps"
        );
    }
}
