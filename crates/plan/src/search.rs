//! The planners: random shooting, and CEM and MPPI, which share the sampling of candidate
//! sequences and differ in how the elites refit the sampling distribution.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use wm_envs::Action;
use wm_imagine::WorldModel;
use wm_models::ActionSpec;

use crate::{Planner, PlannerConfig, sequence_returns};

/// The action space as the planners sample it.
#[derive(Clone, Debug, PartialEq)]
enum ActionSampler {
    /// A box; sequences are sampled in normalised units `u` in `[-1, 1]`, and the raw action
    /// is `center + half * u`.
    Continuous { center: Vec<f32>, half: Vec<f32> },
    /// `n` choices; a sequence holds the indices.
    Discrete { n: usize },
}

impl ActionSampler {
    fn new(spec: &ActionSpec) -> Self {
        match spec {
            ActionSpec::Discrete { n } => {
                assert!(*n > 0, "a discrete action space needs n > 0");
                Self::Discrete { n: *n }
            }
            ActionSpec::Continuous { low, high } => {
                assert!(
                    !low.is_empty()
                        && low.len() == high.len()
                        && low
                            .iter()
                            .zip(high)
                            .all(|(l, h)| l.is_finite() && h.is_finite() && l <= h),
                    "planning needs a finite, non-empty action box, got {spec:?}"
                );
                Self::Continuous {
                    center: low.iter().zip(high).map(|(l, h)| 0.5 * (l + h)).collect(),
                    half: low.iter().zip(high).map(|(l, h)| 0.5 * (h - l)).collect(),
                }
            }
        }
    }

    /// Raw action width `A` (1 for an index).
    fn raw_width(&self) -> usize {
        match self {
            Self::Continuous { center, .. } => center.len(),
            Self::Discrete { .. } => 1,
        }
    }

    /// Parameters of the sampling distribution per time step: the normalised mean of each
    /// dimension, or the probability of each class.
    fn params(&self) -> usize {
        match self {
            Self::Continuous { center, .. } => center.len(),
            Self::Discrete { n } => *n,
        }
    }

    /// The parameters of one time step of the initial distribution (mean 0, or uniform).
    fn initial_param(&self) -> f32 {
        match self {
            Self::Continuous { .. } => 0.0,
            Self::Discrete { n } => 1.0 / *n as f32,
        }
    }

    /// The raw action of one time step of a sampled (normalised) sequence.
    fn raw(&self, values: &[f32]) -> Vec<f32> {
        match self {
            Self::Continuous { center, half } => values
                .iter()
                .zip(center.iter().zip(half))
                .map(|(u, (c, h))| c + h * u)
                .collect(),
            Self::Discrete { .. } => values.to_vec(),
        }
    }

    /// The environment action of one time step of a sampled (normalised) sequence.
    fn action(&self, values: &[f32]) -> Action {
        match self {
            Self::Continuous { .. } => Action::Continuous(self.raw(values)),
            Self::Discrete { .. } => Action::Discrete(values[0] as usize),
        }
    }
}

/// Scores `[B * N, H, A]` candidate sequences (normalised values) from a state tiled `N` times;
/// returns the `B * N` returns on the host.
fn score<M: WorldModel>(
    model: &M,
    tiled: &M::State,
    actions: &ActionSampler,
    candidates: &[f32],
    [rows, h]: [usize; 2],
    discount: f32,
    device: &Device,
) -> Vec<f32> {
    let w = actions.raw_width();
    let raw: Vec<f32> = candidates.chunks(w).flat_map(|v| actions.raw(v)).collect();
    let sequences = Tensor::<3>::from_data(TensorData::new(raw, [rows, h, w]), device);
    sequence_returns(model, tiled, sequences, discount)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 returns")
}

/// Indices of the `k` largest returns, best first (NaN counts as the worst; ties keep the
/// lower index first).
fn top_k(returns: &[f32], k: usize) -> Vec<usize> {
    let key = |i: usize| {
        let r = returns[i];
        if r.is_nan() { f32::NEG_INFINITY } else { r }
    };
    let mut index: Vec<usize> = (0..returns.len()).collect();
    index.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    index.truncate(k);
    index
}

/// Refits the class probabilities of one time step to the elites' (weighted) choices, with
/// additive smoothing: `p_c = (K * w_c + smoothing) / (K + n * smoothing)`, where `K` is the
/// number of elites and `w_c` the total weight (the weights sum to 1) of the elites that chose
/// `c`. With equal weights (CEM) `K * w_c` is the count of `c` among the elites.
pub(crate) fn refit_categorical(
    classes: &[usize],
    weights: &[f32],
    n: usize,
    smoothing: f32,
) -> Vec<f32> {
    let k = classes.len() as f32;
    let mut mass = vec![0.0f32; n];
    for (&c, &w) in classes.iter().zip(weights) {
        mass[c] += w;
    }
    let total: f32 = weights.iter().sum();
    mass.iter()
        .map(|m| (k * m / total + smoothing) / (k + n as f32 * smoothing))
        .collect()
}

/// How the elites refit the sampling distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// Equal weights.
    Cem,
    /// Weights `exp(temperature * (return - max))`.
    Mppi { temperature: f32 },
}

impl Rule {
    fn weights(self, elite_returns: &[f32]) -> Vec<f32> {
        match self {
            Rule::Cem => vec![1.0 / elite_returns.len() as f32; elite_returns.len()],
            Rule::Mppi { temperature } => {
                let max = elite_returns
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                let w: Vec<f32> = elite_returns
                    .iter()
                    .map(|r| {
                        let w = (temperature * (r - max)).exp();
                        if w.is_finite() { w } else { 0.0 }
                    })
                    .collect();
                let sum: f32 = w.iter().sum();
                if sum > 0.0 && sum.is_finite() {
                    w.iter().map(|x| x / sum).collect()
                } else {
                    vec![1.0 / w.len() as f32; w.len()]
                }
            }
        }
    }
}

/// The sampling distribution of every batch row, `[B, H, P]` (P = [`ActionSampler::params`]).
#[derive(Clone, Debug, PartialEq)]
struct Distribution {
    batch: usize,
    /// Normalised means, or class probabilities.
    mean: Vec<f32>,
    /// Normalised standard deviations (continuous actions only).
    std: Vec<f32>,
}

/// The iterative search shared by [`Cem`] and [`Mppi`].
#[derive(Clone, Debug)]
struct Search {
    rule: Rule,
    actions: ActionSampler,
    horizon: usize,
    candidates: usize,
    elites: usize,
    iterations: usize,
    min_std: f32,
    discount: f32,
    smoothing: f32,
    rng: ChaCha8Rng,
    /// The mean of the last plan, for the warm start.
    warm: Option<Distribution>,
}

impl Search {
    fn new(rule: Rule, spec: &ActionSpec, config: &PlannerConfig, seed: u64) -> Self {
        if let Err(invalid) = config.validate() {
            panic!("planner config: {invalid}");
        }
        Self {
            rule,
            actions: ActionSampler::new(spec),
            horizon: config.horizon,
            candidates: config.candidates,
            elites: config.elites,
            iterations: config.iterations,
            min_std: config.min_std,
            discount: config.discount,
            smoothing: config.smoothing,
            rng: ChaCha8Rng::seed_from_u64(seed),
            warm: None,
        }
    }

    /// The distribution a plan starts from: the last plan's mean shifted by one step (its
    /// first step was executed), the last step re-initialised (mean 0 or uniform), and the
    /// initial std of 1 (half the box) everywhere. Without a warm start (or for another batch
    /// size), the initial distribution.
    fn initial(&self, batch: usize) -> Distribution {
        let (h, p) = (self.horizon, self.actions.params());
        let mut mean = vec![self.actions.initial_param(); batch * h * p];
        if let Some(warm) = self.warm.as_ref().filter(|w| w.batch == batch) {
            for row in 0..batch {
                let base = row * h * p;
                mean[base..base + (h - 1) * p].copy_from_slice(&warm.mean[base + p..base + h * p]);
            }
        }
        Distribution {
            batch,
            mean,
            std: vec![1.0; batch * h * p],
        }
    }

    /// Draws `N` sequences per row: `[B, N, H, A]` normalised values (or indices).
    fn sample(&mut self, dist: &Distribution) -> Vec<f32> {
        let (n, h, p, w) = (
            self.candidates,
            self.horizon,
            self.actions.params(),
            self.actions.raw_width(),
        );
        let mut out = Vec::with_capacity(dist.batch * n * h * w);
        for row in 0..dist.batch {
            for _ in 0..n {
                for t in 0..h {
                    let at = (row * h + t) * p;
                    match &self.actions {
                        ActionSampler::Continuous { .. } => {
                            for j in 0..p {
                                let z: f32 = self.rng.sample(StandardNormal);
                                out.push(
                                    (dist.mean[at + j] + dist.std[at + j] * z).clamp(-1.0, 1.0),
                                );
                            }
                        }
                        ActionSampler::Discrete { .. } => {
                            let probs = &dist.mean[at..at + p];
                            let r: f32 = self.rng.random::<f32>() * probs.iter().sum::<f32>();
                            let mut cum = 0.0;
                            let class = probs
                                .iter()
                                .position(|q| {
                                    cum += q;
                                    r < cum
                                })
                                .unwrap_or(p - 1);
                            out.push(class as f32);
                        }
                    }
                }
            }
        }
        out
    }

    /// Refits row `row` of `dist` to the elites of its candidates.
    fn refit(&self, dist: &mut Distribution, row: usize, samples: &[f32], returns: &[f32]) {
        let (n, h, p, w) = (
            self.candidates,
            self.horizon,
            self.actions.params(),
            self.actions.raw_width(),
        );
        let elites = top_k(returns, self.elites);
        let elite_returns: Vec<f32> = elites.iter().map(|&e| returns[e]).collect();
        let weights = self.rule.weights(&elite_returns);
        let value = |e: usize, t: usize, j: usize| samples[((row * n + e) * h + t) * w + j];
        for t in 0..h {
            let at = (row * h + t) * p;
            match &self.actions {
                ActionSampler::Continuous { .. } => {
                    for j in 0..p {
                        let mean: f32 = elites
                            .iter()
                            .zip(&weights)
                            .map(|(&e, wt)| wt * value(e, t, j))
                            .sum();
                        let var: f32 = elites
                            .iter()
                            .zip(&weights)
                            .map(|(&e, wt)| wt * (value(e, t, j) - mean).powi(2))
                            .sum();
                        dist.mean[at + j] = mean;
                        dist.std[at + j] = var.sqrt().max(self.min_std);
                    }
                }
                ActionSampler::Discrete { n: classes } => {
                    let chosen: Vec<usize> =
                        elites.iter().map(|&e| value(e, t, 0) as usize).collect();
                    let probs = refit_categorical(&chosen, &weights, *classes, self.smoothing);
                    dist.mean[at..at + p].copy_from_slice(&probs);
                }
            }
        }
    }

    fn plan<M: WorldModel>(&mut self, model: &M, start: &M::State) -> Vec<Action> {
        check_spec(&self.actions, model);
        let b = model.batch_size(start);
        let device = model.device_of(start);
        let (n, h, p) = (self.candidates, self.horizon, self.actions.params());
        let tiled = model.repeat(start, n);
        let mut dist = self.initial(b);
        for _ in 0..self.iterations {
            let samples = self.sample(&dist);
            let returns = score(
                model,
                &tiled,
                &self.actions,
                &samples,
                [b * n, h],
                self.discount,
                &device,
            );
            for row in 0..b {
                self.refit(&mut dist, row, &samples, &returns[row * n..(row + 1) * n]);
            }
        }
        let actions = (0..b)
            .map(|row| {
                let first = &dist.mean[row * h * p..row * h * p + p];
                match &self.actions {
                    ActionSampler::Continuous { .. } => self.actions.action(first),
                    ActionSampler::Discrete { .. } => Action::Discrete(argmax(first)),
                }
            })
            .collect();
        self.warm = Some(dist);
        actions
    }
}

fn argmax(values: &[f32]) -> usize {
    top_k(values, 1)[0]
}

fn check_spec<M: WorldModel>(actions: &ActionSampler, model: &M) {
    assert_eq!(
        *actions,
        ActionSampler::new(model.action_spec()),
        "the planner was built for another action space than the model's {:?}",
        model.action_spec()
    );
}

/// The cross-entropy method (PlaNet's planner): sample `candidates` sequences from a
/// per-time-step distribution (a Gaussian clipped to the action box, or a categorical), refit
/// it to the `elites` best by predicted return, `iterations` times; act with the first step of
/// the final mean (or the most likely class). Warm-started from the previous plan.
#[derive(Clone, Debug)]
pub struct Cem(Search);

impl Cem {
    /// A CEM planner for `spec` with the numbers of `config` (its `kind` and `temperature` are
    /// not used) and a ChaCha8 stream seeded with `seed`.
    ///
    /// # Panics
    /// If `config` is invalid (see [`PlannerConfig::validate`]) or the box is empty or infinite.
    pub fn new(spec: &ActionSpec, config: &PlannerConfig, seed: u64) -> Self {
        Self(Search::new(Rule::Cem, spec, config, seed))
    }
}

/// Model-predictive path integral control as in TD-MPC2: CEM's sampling, but the elites are
/// weighted by `exp(temperature * (return - max return))` and the mean and std are the
/// weighted averages (std floored at `min_std`). Acts with the first step of the final mean
/// (TD-MPC2's evaluation mode; for discrete actions the most likely class).
#[derive(Clone, Debug)]
pub struct Mppi(Search);

impl Mppi {
    /// An MPPI planner for `spec` with the numbers of `config` (its `kind` is not used) and a
    /// ChaCha8 stream seeded with `seed`.
    ///
    /// # Panics
    /// If `config` is invalid (see [`PlannerConfig::validate`]) or the box is empty or infinite.
    pub fn new(spec: &ActionSpec, config: &PlannerConfig, seed: u64) -> Self {
        Self(Search::new(
            Rule::Mppi {
                temperature: config.temperature,
            },
            spec,
            config,
            seed,
        ))
    }
}

impl Planner for Cem {
    fn plan_from<M: WorldModel>(&mut self, model: &M, start: &M::State) -> Vec<Action> {
        self.0.plan(model, start)
    }

    fn reset(&mut self) {
        self.0.warm = None;
    }
}

impl Planner for Mppi {
    fn plan_from<M: WorldModel>(&mut self, model: &M, start: &M::State) -> Vec<Action> {
        self.0.plan(model, start)
    }

    fn reset(&mut self) {
        self.0.warm = None;
    }
}

/// Random shooting: `candidates` uniformly random sequences (uniform in the box, or uniform
/// classes), the first action of the one with the highest predicted return. Memoryless.
#[derive(Clone, Debug)]
pub struct RandomShooting {
    actions: ActionSampler,
    /// Number of sequences `N` per decision.
    pub candidates: usize,
    /// Horizon `H`.
    pub horizon: usize,
    /// Discount of the predicted returns.
    pub discount: f32,
    rng: ChaCha8Rng,
}

impl RandomShooting {
    /// A random-shooting planner for `spec` with `config`'s `candidates`, `horizon` and
    /// `discount`, and a ChaCha8 stream seeded with `seed`.
    ///
    /// # Panics
    /// If `config` is invalid (see [`PlannerConfig::validate`]) or the box is empty or infinite.
    pub fn new(spec: &ActionSpec, config: &PlannerConfig, seed: u64) -> Self {
        if let Err(invalid) = config.validate() {
            panic!("planner config: {invalid}");
        }
        Self {
            actions: ActionSampler::new(spec),
            candidates: config.candidates,
            horizon: config.horizon,
            discount: config.discount,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl Planner for RandomShooting {
    fn plan_from<M: WorldModel>(&mut self, model: &M, start: &M::State) -> Vec<Action> {
        check_spec(&self.actions, model);
        let b = model.batch_size(start);
        let device = model.device_of(start);
        let (n, h, w) = (self.candidates, self.horizon, self.actions.raw_width());
        let tiled = model.repeat(start, n);
        let samples: Vec<f32> = (0..b * n * h * w)
            .map(|_| match &self.actions {
                ActionSampler::Continuous { .. } => self.rng.random_range(-1.0f32..=1.0),
                ActionSampler::Discrete { n } => self.rng.random_range(0..*n) as f32,
            })
            .collect();
        let returns = score(
            model,
            &tiled,
            &self.actions,
            &samples,
            [b * n, h],
            self.discount,
            &device,
        );
        (0..b)
            .map(|row| {
                let best = row * n + argmax(&returns[row * n..(row + 1) * n]);
                self.actions
                    .action(&samples[best * h * w..best * h * w + w])
            })
            .collect()
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnyPlanner, PlannerKind, TrueDynamics};
    use std::cell::RefCell;
    use wm_envs::{Env, Pendulum};
    use wm_imagine::{Context, StepPrediction};

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// A toy model that rewards hitting a target action at each step. State `[B, 2]`:
    /// `(t, offset)`. Continuous: reward `-(a - (offset + slope * t))^2`; discrete: reward 1 if
    /// `a == (offset + t) mod n`, else 0. Never terminates.
    struct Target {
        spec: ActionSpec,
        slope: f32,
        /// The batch size of every model step taken, in order.
        steps: RefCell<Vec<usize>>,
    }

    impl Target {
        fn new(spec: ActionSpec, slope: f32) -> Self {
            Self {
                spec,
                slope,
                steps: RefCell::new(Vec::new()),
            }
        }
    }

    impl WorldModel for Target {
        type State = Tensor<2>;
        fn obs_dim(&self) -> usize {
            2
        }
        fn action_spec(&self) -> &ActionSpec {
            &self.spec
        }
        fn start(&self, context: &Context, _: bool) -> Tensor<2> {
            context.obs().clone()
        }
        fn observe_step(&self, _: &Tensor<2>, _: Tensor<2>, obs: Tensor<2>, _: bool) -> Tensor<2> {
            obs
        }
        fn step(
            &self,
            state: &Tensor<2>,
            action: Tensor<2>,
            _: bool,
        ) -> (Tensor<2>, StepPrediction) {
            let b = state.dims()[0];
            self.steps.borrow_mut().push(b);
            let device = state.device();
            let (s, a) = (host(state.clone()), host(action));
            let reward: Vec<f32> = (0..b)
                .map(|i| {
                    let (t, offset) = (s[2 * i], s[2 * i + 1]);
                    match self.spec {
                        ActionSpec::Continuous { .. } => {
                            -(a[i] - (offset + self.slope * t)).powi(2)
                        }
                        ActionSpec::Discrete { n } => {
                            f32::from(a[i] as usize == (offset + t) as usize % n)
                        }
                    }
                })
                .collect();
            let next = state.clone() + Tensor::<2>::from_floats([[1.0, 0.0]], &device);
            let prediction = StepPrediction {
                obs: next.clone(),
                reward: Tensor::from_data(TensorData::new(reward, [b]), &device),
                continue_prob: Tensor::ones([b], &device),
            };
            (next, prediction)
        }
        fn observation(&self, state: &Tensor<2>) -> Tensor<2> {
            state.clone()
        }
        fn batch_size(&self, state: &Tensor<2>) -> usize {
            state.dims()[0]
        }
        fn repeat(&self, state: &Tensor<2>, times: usize) -> Tensor<2> {
            wm_imagine::repeat_rows(state.clone(), times)
        }
    }

    fn context(rows: &[[f32; 2]]) -> Context {
        let values: Vec<f32> = rows.iter().flatten().copied().collect();
        Context::new(Tensor::from_data(
            TensorData::new(values, [rows.len(), 2]),
            &wm_backend::test_device(),
        ))
    }

    fn box_spec() -> ActionSpec {
        ActionSpec::Continuous {
            low: vec![-2.0],
            high: vec![2.0],
        }
    }

    fn small(kind: PlannerKind) -> PlannerConfig {
        PlannerConfig {
            horizon: 6,
            candidates: 200,
            elites: 20,
            iterations: 6,
            ..PlannerConfig::defaults(kind)
        }
    }

    fn continuous(action: &Action) -> f32 {
        match action {
            Action::Continuous(v) => v[0],
            other => panic!("expected a continuous action, got {other:?}"),
        }
    }

    #[test]
    fn discrete_cem_refits_class_probabilities_to_the_elites() {
        // Elites chose 1, 1, 1, 0 of 3 classes: Laplace-smoothed frequencies (count + 1) / (4 + 3).
        let p = refit_categorical(&[1, 1, 1, 0], &[0.25; 4], 3, 1.0);
        let want = [2.0 / 7.0, 4.0 / 7.0, 1.0 / 7.0];
        assert!(
            p.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{p:?}"
        );
        // No smoothing: the frequencies themselves; weights (MPPI) count as shares of K.
        assert_eq!(
            refit_categorical(&[2, 2, 0, 0], &[0.25; 4], 3, 0.0),
            [0.5, 0.0, 0.5]
        );
        let p = refit_categorical(&[0, 1], &[0.75, 0.25], 2, 0.0);
        assert!(
            (p[0] - 0.75).abs() < 1e-6 && (p[1] - 0.25).abs() < 1e-6,
            "{p:?}"
        );

        // In the planner: the class rewarded at step t is (1 + t) mod 3, and CEM's refitted
        // distribution puts most of its mass there at every step.
        let model = Target::new(ActionSpec::Discrete { n: 3 }, 0.0);
        let mut cem = Cem::new(model.action_spec(), &small(PlannerKind::Cem), 0);
        let action = cem.plan_one(&model, &context(&[[0.0, 1.0]]));
        assert_eq!(action, Action::Discrete(1));
        let dist = cem.0.warm.as_ref().unwrap();
        for t in 0..6 {
            let probs = &dist.mean[t * 3..t * 3 + 3];
            let target = (1 + t) % 3;
            assert!(probs[target] > 0.8, "step {t}: {probs:?}, target {target}");
            assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{probs:?}");
            // The smoothing keeps every class possible: at least 1 / (K + n).
            assert!(probs.iter().all(|&q| q >= 1.0 / 23.0 - 1e-6), "{probs:?}");
        }
    }

    #[test]
    fn mppi_weights_elites_by_exponentiated_advantage() {
        let w = Rule::Mppi { temperature: 0.5 }.weights(&[0.0, -2.0]);
        let e = (-1.0f32).exp();
        assert!(
            (w[0] - 1.0 / (1.0 + e)).abs() < 1e-6 && (w[1] - e / (1.0 + e)).abs() < 1e-6,
            "{w:?}"
        );
        assert_eq!(Rule::Cem.weights(&[3.0, -9.0]), [0.5, 0.5]);
        assert_eq!(top_k(&[1.0, f32::NAN, 3.0, 2.0], 3), [2, 3, 0]);
    }

    #[test]
    fn warm_start_shifts_the_plan_by_one_step() {
        // Targets -1.5, -0.9, .., 1.5 (raw) over 6 steps; the plan's mean follows them.
        let model = Target::new(box_spec(), 0.6);
        for kind in [PlannerKind::Cem, PlannerKind::Mppi] {
            let mut planner = small(kind).init(model.action_spec(), 0);
            let search = |p: &AnyPlanner| match p {
                AnyPlanner::Cem(c) => c.0.clone(),
                AnyPlanner::Mppi(m) => m.0.clone(),
                AnyPlanner::RandomShooting(_) => unreachable!(),
            };
            let a = continuous(&planner.plan_one(&model, &context(&[[0.0, -1.5]])));
            assert!((a + 1.5).abs() < 0.1, "{kind:?}: first action {a}");
            let s = search(&planner);
            let plan = s.warm.clone().unwrap().mean;
            for (t, m) in plan.iter().enumerate() {
                let target = (-1.5 + 0.6 * t as f32) / 2.0;
                assert!((m - target).abs() < 0.1, "{kind:?}: mean {plan:?}");
            }
            let next = s.initial(1);
            assert_eq!(next.mean[..5], plan[1..], "{kind:?}: shifted by one step");
            assert_eq!(next.mean[5], 0.0, "{kind:?}: last step re-initialised");
            assert_eq!(next.std, [1.0; 6], "{kind:?}: std re-initialised");
            // Another batch size, or a reset, starts from scratch.
            assert_eq!(s.initial(2).mean, [0.0; 12]);
            planner.reset();
            assert_eq!(
                search(&planner).initial(1).mean,
                [0.0; 6],
                "{kind:?}: after reset"
            );
        }
    }

    #[test]
    fn every_iteration_scores_all_candidates_of_all_rows_with_one_model_step_per_horizon_step() {
        let model = Target::new(box_spec(), 0.0);
        for kind in [
            PlannerKind::Cem,
            PlannerKind::Mppi,
            PlannerKind::RandomShooting,
        ] {
            let config = small(kind);
            let mut planner = config.init(model.action_spec(), 0);
            model.steps.borrow_mut().clear();
            planner.plan(&model, &context(&[[0.0, -1.0], [0.0, 1.5]]));
            let iterations = if kind == PlannerKind::RandomShooting {
                1
            } else {
                config.iterations
            };
            let steps = model.steps.borrow().clone();
            assert_eq!(
                steps,
                vec![2 * config.candidates; iterations * config.horizon],
                "{kind:?}: batch of each model step"
            );
        }
    }

    #[test]
    fn planning_from_a_carried_state_equals_planning_from_the_context() {
        let model = Target::new(box_spec(), 0.6);
        let rows = [[0.0, -1.0], [2.0, 0.5]];
        for kind in [
            PlannerKind::Cem,
            PlannerKind::Mppi,
            PlannerKind::RandomShooting,
        ] {
            let (mut a, mut b) = (
                small(kind).init(model.action_spec(), 9),
                small(kind).init(model.action_spec(), 9),
            );
            for _ in 0..2 {
                let from_context = a.plan(&model, &context(&rows));
                let state = model.start(&context(&rows), false);
                assert_eq!(from_context, b.plan_from(&model, &state), "{kind:?}");
            }
        }
    }

    #[test]
    fn batched_plans_keep_each_row_apart() {
        let model = Target::new(box_spec(), 0.0);
        for kind in [
            PlannerKind::Cem,
            PlannerKind::Mppi,
            PlannerKind::RandomShooting,
        ] {
            let mut planner = small(kind).init(model.action_spec(), 3);
            let actions = planner.plan(&model, &context(&[[0.0, -1.0], [0.0, 1.5], [0.0, 0.5]]));
            let got: Vec<f32> = actions.iter().map(continuous).collect();
            let tol = if kind == PlannerKind::RandomShooting {
                0.6
            } else {
                0.1
            };
            for (g, want) in got.iter().zip([-1.0, 1.5, 0.5]) {
                assert!((g - want).abs() < tol, "{kind:?}: {got:?}");
            }
        }
    }

    #[test]
    fn same_seed_gives_the_same_plan() {
        let model = TrueDynamics::pendulum();
        let device = wm_backend::test_device();
        let run = |kind: PlannerKind, seed: u64| {
            let mut planner = PlannerConfig {
                candidates: 64,
                elites: 8,
                iterations: 3,
                ..PlannerConfig::defaults(kind)
            }
            .init(model.action_spec(), seed);
            let mut env = Pendulum::new();
            let mut obs = env.reset(Some(0));
            let mut actions = Vec::new();
            for _ in 0..3 {
                let c = Context::new(Tensor::from_data(TensorData::new(obs, [1, 3]), &device));
                let a = planner.plan_one(&model, &c);
                obs = env.step(&a).unwrap().obs;
                actions.push(continuous(&a));
            }
            actions
        };
        for kind in [
            PlannerKind::Cem,
            PlannerKind::Mppi,
            PlannerKind::RandomShooting,
        ] {
            let first = run(kind, 5);
            assert_eq!(first, run(kind, 5), "{kind:?}");
            assert_ne!(first, run(kind, 6), "{kind:?}: another seed should differ");
        }
    }

    #[test]
    fn returns_stop_counting_after_predicted_termination() {
        let model = TrueDynamics::cartpole();
        let device = wm_backend::test_device();
        // Row 0 leans past 12 degrees after one step whatever the action; row 1 is upright.
        let start = Tensor::<2>::from_floats([[0.0, 0.0, 0.2, 2.0], [0.0, 0.0, 0.0, 0.0]], &device);
        let actions = Tensor::<3>::from_floats([[[0.0], [1.0], [0.0], [1.0], [0.0]]; 2], &device);
        let rollout = model.imagine(
            &start,
            wm_imagine::ImagineActions::Sequence(actions.clone()),
            false,
        );
        // The physics goes on after the termination (reward 1 every step)...
        assert_eq!(host(rollout.reward), [1.0; 10]);
        assert_eq!(host(rollout.continue_prob)[..5], [0.0; 5]);
        // ... but only the terminating step's reward counts.
        let r = host(crate::sequence_returns(&model, &start, actions, 0.9));
        assert_eq!(r[0], 1.0, "{r:?}");
        assert!(
            (r[1] - (1.0 + 0.9 + 0.81 + 0.729 + 0.6561)).abs() < 1e-5,
            "{r:?}"
        );
    }

    #[test]
    fn config_fields_default_per_kind_and_unknown_fields_are_rejected() {
        let parse = |s: &str| serde_json::from_str::<PlannerConfig>(s);
        assert_eq!(parse("{}").unwrap(), PlannerConfig::cem());
        assert_eq!(parse(r#"{"kind": "Mppi"}"#).unwrap(), PlannerConfig::mppi());
        let c = parse(r#"{"kind": "Cem", "horizon": 20}"#).unwrap();
        assert_eq!(
            (c.horizon, c.candidates, c.elites, c.iterations),
            (20, 1000, 100, 10)
        );
        let m = PlannerConfig::mppi();
        assert_eq!(
            (
                m.horizon,
                m.candidates,
                m.elites,
                m.iterations,
                m.temperature
            ),
            (12, 512, 64, 6, 0.5)
        );
        let err = parse(r#"{"horizn": 3}"#).unwrap_err().to_string();
        assert!(err.contains("horizn"), "{err}");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(parse(&json).unwrap(), m);
    }

    #[test]
    fn more_elites_than_candidates_is_an_error_naming_the_field() {
        let config = PlannerConfig {
            candidates: 10,
            elites: 20,
            ..PlannerConfig::cem()
        };
        let invalid = config.validate().unwrap_err();
        assert_eq!(
            invalid.to_string(),
            "field `elites` must be between 1 and candidates (10), got 20"
        );
        // Random shooting keeps no elites.
        assert!(
            PlannerConfig {
                kind: PlannerKind::RandomShooting,
                ..config
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn zero_nan_and_huge_planner_values_are_errors() {
        let bad = [
            PlannerConfig {
                horizon: 0,
                ..PlannerConfig::cem()
            },
            PlannerConfig {
                candidates: usize::MAX,
                ..PlannerConfig::cem()
            },
            PlannerConfig {
                temperature: f32::NAN,
                ..PlannerConfig::mppi()
            },
            PlannerConfig {
                discount: 0.0,
                ..PlannerConfig::cem()
            },
            PlannerConfig {
                min_std: -1.0,
                ..PlannerConfig::cem()
            },
            PlannerConfig {
                smoothing: f32::INFINITY,
                ..PlannerConfig::cem()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        assert!(
            PlannerConfig::cem().validate().is_ok() && PlannerConfig::mppi().validate().is_ok()
        );
    }
}
