//! A small DQN (Mnih et al. 2015: epsilon-greedy acting, a replay of transitions, a target
//! network copied every `target_every` updates, the TD error's Huber loss) written on burn-rl's
//! traits: [`DqnPolicy`] is a [`burn_rl::Policy`], [`DqnLearner`] a [`burn_rl::PolicyLearner`],
//! and transitions live in burn-rl's [`TransitionBuffer`]. [`run_dqn`] is the acting-learning
//! loop over any burn-rl [`Environment`] with discrete actions (burn-train's own loop, behind its
//! `rl` feature, is not used: enabling it would rebuild burn-train and its terminal UI).

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_rl::{
    Batchable, Environment, LearnerTransitionBatch, Policy, PolicyLearner, PolicyState,
    RLTrainOutput, SliceAccess, TransitionBuffer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wm_envs::Action;
use wm_models::mlp::{Mlp, MlpConfig};

use crate::env::Obs;

/// DQN's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DqnConfig {
    /// Hidden widths of the Q-network.
    pub hidden: Vec<usize>,
    /// Discount.
    pub gamma: f32,
    /// Adam's learning rate.
    pub lr: f64,
    /// Transitions per update.
    pub batch_size: usize,
    /// Replay capacity in transitions.
    pub capacity: usize,
    /// Environment steps before the first update.
    pub warmup: usize,
    /// Updates between copies of the online network into the target network.
    pub target_every: usize,
    /// Exploration: epsilon decays linearly from `epsilon_start` to `epsilon_end` over
    /// `epsilon_steps` environment steps.
    pub epsilon_start: f64,
    /// See `epsilon_start`.
    pub epsilon_end: f64,
    /// See `epsilon_start`.
    pub epsilon_steps: usize,
}

impl Default for DqnConfig {
    fn default() -> Self {
        Self {
            hidden: vec![64, 64],
            gamma: 0.99,
            lr: 1e-3,
            batch_size: 32,
            capacity: 10_000,
            warmup: 64,
            target_every: 100,
            epsilon_start: 1.0,
            epsilon_end: 0.05,
            epsilon_steps: 1_000,
        }
    }
}

/// The Q-network: observation to one value per action.
#[derive(Module, Debug)]
pub struct QNet {
    /// `[O] -> [n]`.
    pub net: Mlp,
}

impl QNet {
    /// Q-values.
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`; returns `[B, n]`
    pub fn forward(&self, obs: Tensor<2>) -> Tensor<2> {
        self.net.forward(obs)
    }
}

/// A batch of rows (observations, actions or Q-values), `[B, W]`: burn-rl's [`Batchable`] and
/// [`SliceAccess`] (the replay's storage) for a tensor.
#[derive(Debug, Clone)]
pub struct Rows(pub Tensor<2>);

impl Batchable for Rows {
    fn batch(value: Vec<Self>) -> Self {
        Rows(Tensor::cat(value.into_iter().map(|r| r.0).collect(), 0))
    }

    fn unbatch(self) -> Vec<Self> {
        let [b, _] = self.0.dims();
        (0..b)
            .map(|i| Rows(self.0.clone().narrow(0, i, 1)))
            .collect()
    }
}

impl SliceAccess for Rows {
    fn zeros_like(sample: &Self, capacity: usize, device: &Device) -> Self {
        Rows(<Tensor<2> as SliceAccess>::zeros_like(
            &sample.0, capacity, device,
        ))
    }

    fn select(self, dim: usize, indices: Tensor<1, Int>) -> Self {
        Rows(Tensor::select(self.0, dim, indices))
    }

    fn slice_assign_inplace(&mut self, index: usize, value: Self) {
        SliceAccess::slice_assign_inplace(&mut self.0, index, value.0);
    }
}

/// The policy's parameters, as burn-rl passes them from the learner to the actors.
#[derive(Debug, Clone)]
pub struct DqnState(pub QNet);

impl PolicyState for DqnState {
    type Record = QNet;

    fn into_record(self) -> QNet {
        self.0
    }

    fn load_record(&self, record: QNet) -> Self {
        DqnState(record)
    }
}

/// Epsilon-greedy acting with a Q-network (on a plain device).
#[derive(Debug, Clone)]
pub struct DqnPolicy {
    net: QNet,
    /// The probability of a uniformly random action when not deterministic.
    pub epsilon: f64,
    actions: usize,
    rng: ChaCha8Rng,
}

impl DqnPolicy {
    /// Acting with `net` among `actions` actions; `seed` drives exploration.
    pub fn new(net: QNet, actions: usize, epsilon: f64, seed: u64) -> Self {
        Self {
            net,
            epsilon,
            actions,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl Policy for DqnPolicy {
    type Observation = Rows;
    type ActionDistribution = Rows;
    type Action = Rows;
    type ActionContext = ();
    type PolicyState = DqnState;

    /// Q-values `[B, n]`.
    fn forward(&mut self, obs: Rows) -> Rows {
        Rows(self.net.forward(obs.0))
    }

    /// Greedy actions (`deterministic`), or epsilon-greedy ones, as `[B, 1]` indices.
    fn action(&mut self, obs: Rows, deterministic: bool) -> (Rows, Vec<()>) {
        let device = obs.0.device();
        let [b, _] = obs.0.dims();
        let greedy: Vec<i64> = self
            .net
            .forward(obs.0)
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap_or_else(|_| vec![0; b]);
        let chosen: Vec<f32> = greedy
            .into_iter()
            .map(|a| {
                if !deterministic && self.rng.random_bool(self.epsilon.clamp(0.0, 1.0)) {
                    self.rng.random_range(0..self.actions) as f32
                } else {
                    a as f32
                }
            })
            .collect();
        (
            Rows(Tensor::from_data(TensorData::new(chosen, [b, 1]), &device)),
            vec![(); b],
        )
    }

    fn update(&mut self, update: DqnState) {
        self.net = update.0;
    }

    fn state(&self) -> DqnState {
        DqnState(self.net.clone())
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            net: self.net.to_device(device),
            ..self
        }
    }

    fn load_record(self, record: QNet) -> Self {
        Self {
            net: record,
            ..self
        }
    }
}

/// DQN's learner: the online network (on an autodiff device), the target network and Adam.
pub struct DqnLearner {
    online: QNet,
    target: QNet,
    optimizer: ModuleOptimizer,
    config: DqnConfig,
    actions: usize,
    updates: usize,
    device: Device,
}

impl DqnLearner {
    /// A new learner for `obs_dim`-wide observations and `actions` actions, on `device` (an
    /// autodiff device; a plain one is made autodiff).
    pub fn new(config: DqnConfig, obs_dim: usize, actions: usize, device: &Device) -> Self {
        let device = device.clone().autodiff();
        let online = QNet {
            net: MlpConfig::new(obs_dim, config.hidden.clone(), actions).init(&device),
        };
        Self {
            target: online.valid(),
            online,
            optimizer: AdamConfig::new().init(),
            config,
            actions,
            updates: 0,
            device,
        }
    }

    /// Updates done.
    pub fn updates(&self) -> usize {
        self.updates
    }
}

impl PolicyLearner for DqnLearner {
    /// The TD loss of the update.
    type TrainContext = f32;
    type InnerPolicy = DqnPolicy;
    type Record = QNet;

    /// One update: `Q(s, a)` towards `r + gamma (1 - done) max_a' Q_target(s', a')` under the
    /// Huber loss (delta 1).
    fn train(&mut self, input: LearnerTransitionBatch<DqnPolicy>) -> RLTrainOutput<f32, DqnState> {
        let target_q = self.target.forward(input.next_states.0.inner()).max_dim(1);
        let y = (input.rewards.inner()
            + (input.dones.inner().neg().add_scalar(1.0) * target_q).mul_scalar(self.config.gamma))
        .autodiff();
        let actions = input.actions.0.inner().int().autodiff();
        let q = self
            .online
            .forward(input.states.0.inner().autodiff())
            .gather(1, actions);
        let error = (q - y).abs();
        // Huber: 0.5 e^2 below 1, e - 0.5 above.
        let small = error.clone().clamp_max(1.0);
        let loss = (small.clone() * small.clone()).mul_scalar(0.5) + (error - small);
        let loss = loss.mean();
        let value = loss
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_or(f32::NAN, |v| v[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &self.online);
        self.online = self
            .optimizer
            .step(self.config.lr, self.online.clone(), grads);
        self.updates += 1;
        if self.updates.is_multiple_of(self.config.target_every.max(1)) {
            self.target = self.online.valid();
        }
        RLTrainOutput {
            policy: DqnState(self.online.valid()),
            item: value,
        }
    }

    fn policy(&self) -> DqnPolicy {
        DqnPolicy::new(
            self.online.valid(),
            self.actions,
            self.config.epsilon_end,
            self.updates as u64,
        )
    }

    fn update_policy(&mut self, update: DqnPolicy) {
        self.online = update.net.to_device(&self.device).train();
    }

    fn record(&self) -> QNet {
        self.online.valid()
    }

    fn load_record(mut self, record: QNet) -> Self {
        self.online = record.to_device(&self.device).train();
        self.target = self.online.valid();
        self
    }

    fn device(&self) -> Device {
        self.device.clone()
    }
}

/// What [`run_dqn`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct DqnRun {
    /// Environment steps taken.
    pub steps: usize,
    /// Updates done.
    pub updates: usize,
    /// Returns of the episodes that ended (done or truncated), in order.
    pub returns: Vec<f64>,
    /// The TD loss of each update.
    pub losses: Vec<f32>,
}

/// Trains `learner` for `steps` steps of `env` (discrete actions `0..n`): epsilon-greedy
/// acting with the learner's newest policy, every transition into a burn-rl
/// [`TransitionBuffer`], one update per step after `warmup` steps. `seed` drives exploration.
pub fn run_dqn<E>(env: &mut E, learner: &mut DqnLearner, steps: usize, seed: u64) -> DqnRun
where
    E: Environment<State = Obs, Action = Action>,
{
    let config = learner.config.clone();
    let plain = learner.device.clone().inner();
    let mut buffer = TransitionBuffer::<Rows, Rows>::new(config.capacity, &plain);
    let mut policy = DqnPolicy::new(learner.online.valid(), learner.actions, 1.0, seed);
    let row = |values: Vec<f32>| {
        let n = values.len();
        Rows(Tensor::from_data(TensorData::new(values, [1, n]), &plain))
    };
    let mut run = DqnRun {
        steps: 0,
        updates: 0,
        returns: Vec::new(),
        losses: Vec::new(),
    };
    env.reset();
    let mut episode_return = 0.0;
    for step in 0..steps {
        let progress = (step as f64 / config.epsilon_steps.max(1) as f64).min(1.0);
        policy.epsilon =
            config.epsilon_start + (config.epsilon_end - config.epsilon_start) * progress;
        let Obs(obs) = env.state();
        let (action, _) = policy.action(row(obs.clone()), false);
        let index = action
            .0
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_or(0, |v| v[0] as usize);
        let result = env.step(Action::Discrete(index));
        episode_return += result.reward;
        let Obs(next) = result.next_state;
        buffer.push(
            row(obs),
            row(next),
            action,
            result.reward as f32,
            result.done,
        );
        run.steps += 1;
        if result.done || result.truncated {
            run.returns.push(episode_return);
            episode_return = 0.0;
            env.reset();
        }
        if step + 1 >= config.warmup && buffer.len() >= config.batch_size {
            let output = learner.train(buffer.sample(config.batch_size));
            run.losses.push(output.item);
            policy.update(output.policy);
            run.updates += 1;
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::env::{ImaginedEnv, RealCartPole};

    /// A cVAE of CartPole trained for a few hundred updates on random-action data.
    fn trained_cartpole_model(runs: &std::path::Path) -> (wm_train::AnyModel, Device) {
        let config = wm_train::TrainConfig::load(
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../configs/cartpole_cvae.ron"
            )),
            &[
                "data.prefill_steps=1000".into(),
                "data.eval_steps=100".into(),
                "schedule.updates=300".into(),
                "schedule.eval_every=300".into(),
                "schedule.checkpoint_every=300".into(),
                "model.hidden=[32, 32]".into(),
                "optim.batch_size=64".into(),
                "eval.iwae_samples=[1]".into(),
                "eval.max_nll_transitions=16".into(),
                "eval.policy_episodes=0".into(),
                "pipeline.deterministic=true".into(),
            ],
        )
        .expect("config");
        let options = wm_train::TrainOptions {
            runs_dir: runs.to_path_buf(),
            device: wm_backend::test_device_spec(),
            progress: false,
            interrupt: Arc::new(AtomicBool::new(false)),
        };
        let outcome = wm_train::train(config, &options).expect("training");
        let device = wm_backend::test_device();
        let (_, model, _, _) =
            wm_train::load_for_eval(&outcome.run.dir, &device).expect("the trained run");
        (model, device)
    }

    #[test]
    fn dqn_trains_on_the_imagined_cartpole_through_burn_rl_and_acts_on_the_real_one() {
        let runs = tempfile::tempdir().expect("temp dir");
        let (model, device) = trained_cartpole_model(runs.path());
        // Start states: the real environment's resets.
        let mut real = wm_envs::make("cartpole").expect("cartpole");
        let starts: Vec<Vec<f32>> = (0..32).map(|seed| real.reset(Some(seed))).collect();
        // Short imagined episodes (50 steps, MBPO-style model rollouts) keep the states where
        // the model was trained, whether or not it has learned to predict termination.
        let mut imagined =
            ImaginedEnv::<_, 50>::new(model, starts, false, 0, device.clone()).expect("env");
        let config = DqnConfig {
            hidden: vec![32],
            warmup: 32,
            batch_size: 32,
            target_every: 50,
            epsilon_steps: 200,
            ..DqnConfig::default()
        };
        let mut learner = DqnLearner::new(config, 4, 2, &device);
        let before = learner.record();
        let probe = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 0.05, 0.0, 0.0, 0.0, -0.05, 0.0], [2, 4]),
            &device,
        );
        let run = run_dqn(&mut imagined, &mut learner, 300, 1);
        assert_eq!(run.steps, 300);
        assert_eq!(
            run.updates,
            300 - 31,
            "one update per step from the warm-up on"
        );
        assert_eq!(learner.updates(), run.updates);
        assert!(run.losses.iter().all(|l| l.is_finite()), "{:?}", run.losses);
        assert!(
            !run.returns.is_empty(),
            "imagined episodes end (the model predicts termination, or the limit): {run:?}"
        );
        assert!(
            run.returns.iter().all(|r| (0.0..=60.0).contains(r)),
            "imagined CartPole returns are about 1 per step, at most 50 steps: {:?}",
            run.returns
        );
        // The TD loss stays bounded (Q-values of at most 50 rewards of about 1).
        let last = &run.losses[run.losses.len() - 20..];
        assert!(
            last.iter().all(|l| *l < 100.0),
            "the TD loss diverged: {last:?}"
        );
        let q = |net: &QNet| -> Vec<f32> {
            net.forward(probe.clone())
                .into_data()
                .try_to_vec()
                .expect("f32")
        };
        assert_ne!(
            q(&before),
            q(&learner.record()),
            "the updates change the Q-network"
        );

        // The record round-trips through a fresh learner (burn-rl's load_record).
        let restored = DqnLearner::new(
            DqnConfig {
                hidden: vec![32],
                ..DqnConfig::default()
            },
            4,
            2,
            &device,
        )
        .load_record(learner.record());
        assert_eq!(q(&restored.record()), q(&learner.record()));

        // The policy learned in imagination acts on the real CartPole through burn-rl's traits.
        let mut policy = learner.policy();
        let mut env = RealCartPole::new("cartpole", 100).expect("cartpole");
        let mut length = 0;
        loop {
            let obs = env.state().0;
            let (action, _) = policy.action(
                Rows(Tensor::from_data(TensorData::new(obs, [1, 4]), &device)),
                true,
            );
            let index: Vec<f32> = action.0.into_data().try_to_vec().expect("f32");
            let step = env.step(Action::Discrete(index[0] as usize));
            length += 1;
            if step.done || step.truncated {
                break;
            }
        }
        assert!(
            (1..=CARTPOLE_LIMIT).contains(&length),
            "a real episode of {length} steps"
        );
    }

    const CARTPOLE_LIMIT: usize = wm_envs::CARTPOLE_MAX_EPISODE_STEPS;

    #[test]
    fn rows_batch_and_unbatch_are_inverse() {
        let device = wm_backend::test_device();
        let rows = Rows(Tensor::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]),
            &device,
        ));
        let split = rows.clone().unbatch();
        assert_eq!(split.len(), 3);
        assert_eq!(split[1].0.dims(), [1, 2]);
        let joined: Vec<f32> = Rows::batch(split).0.into_data().try_to_vec().expect("f32");
        assert_eq!(joined, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn greedy_actions_take_the_largest_q_value_and_epsilon_one_explores() {
        let device = wm_backend::test_device();
        let learner = DqnLearner::new(DqnConfig::default(), 4, 2, &device);
        let mut policy = learner.policy();
        let obs = Rows(Tensor::from_data(
            TensorData::new(vec![0.1f32, -0.3, 0.2, 0.5], [1, 4]),
            &device,
        ));
        let q: Vec<f32> = policy
            .forward(obs.clone())
            .0
            .into_data()
            .try_to_vec()
            .expect("f32");
        let best = if q[1] > q[0] { 1.0 } else { 0.0 };
        let (greedy, _) = policy.action(obs.clone(), true);
        assert_eq!(
            greedy.0.into_data().try_to_vec::<f32>().expect("f32"),
            vec![best]
        );
        policy.epsilon = 1.0;
        let explored: Vec<f32> = (0..200)
            .map(|_| {
                policy
                    .action(obs.clone(), false)
                    .0
                    .0
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("f32")[0]
            })
            .collect();
        assert!(
            explored.contains(&0.0) && explored.contains(&1.0),
            "epsilon 1 takes both actions"
        );
    }
}
