//! Toy data sets and a small training loop for the tests.

use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::{ActionSpec, ModelSpec, Normalizer, TransitionModel, TransitionTensors};

pub type TestRng = ChaCha8Rng;

/// burn-flex and libtorch each keep one process-wide RNG behind `Device::seed`, so tests that run in parallel
/// would interleave their draws (weight initialisation, reparameterisation noise) and stop being
/// reproducible. Every test that seeds a device holds this lock for its whole run.
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Locks the process-wide device RNG and seeds it; keep the guard alive for the whole test.
/// Returns the plain test device: flex, or the one `WM_TEST_DEVICE` names (`wm_backend::test_device`).
pub fn seeded_device(seed: u64) -> (std::sync::MutexGuard<'static, ()>, Device) {
    let guard = DEVICE_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = wm_backend::test_device();
    device.seed(seed);
    (guard, device)
}

pub fn rng(seed: u64) -> TestRng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn mean(t: Tensor<1>) -> f64 {
    let v = t.into_data().try_to_vec::<f32>().unwrap();
    v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64
}

pub fn to_vec2(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// A random batch for shape tests: observations ~ N(0, 1), valid actions, 10% terminations.
pub fn random_batch(spec: &ModelSpec, batch: usize, device: &Device) -> TransitionTensors {
    let mut r = rng(123);
    let o = spec.obs_dim;
    let normal = |r: &mut TestRng, n: usize| {
        (0..n)
            .map(|_| r.sample::<f32, _>(StandardNormal))
            .collect::<Vec<_>>()
    };
    let obs = normal(&mut r, batch * o);
    let next = normal(&mut r, batch * o);
    let action: Vec<f32> = match &spec.action {
        ActionSpec::Discrete { n } => (0..batch).map(|_| r.random_range(0..*n) as f32).collect(),
        ActionSpec::Continuous { low, high } => (0..batch * low.len())
            .map(|i| r.random_range(low[i % low.len()]..=high[i % low.len()]))
            .collect(),
    };
    let reward = normal(&mut r, batch);
    let term: Vec<f32> = (0..batch)
        .map(|_| if r.random::<f32>() < 0.1 { 1.0 } else { 0.0 })
        .collect();
    TransitionTensors::from_host(
        &obs,
        &action,
        &next,
        &reward,
        &term,
        batch,
        o,
        spec.action.raw_width(),
        device,
    )
}

/// Adam (gradient norm clipped at 100) for `steps` steps on fresh batches from `batch`.
pub fn train<M: TransitionModel>(
    mut model: M,
    steps: usize,
    lr: f64,
    mut batch: impl FnMut(&mut TestRng) -> TransitionTensors,
    rng: &mut TestRng,
) -> M {
    let mut optim = AdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(100.0)))
        .init();
    let log = std::env::var_os("WM_TEST_LOG").is_some();
    for step in 0..steps {
        let b = batch(rng);
        let loss = model.loss(&b);
        if log && step % 100 == 0 {
            let terms: Vec<String> = loss
                .terms
                .iter()
                .map(|(k, t)| format!("{k} {:.3}", t.clone().into_scalar::<f32>()))
                .collect();
            eprintln!("step {step}: {} {:?}", terms.join(", "), loss.metrics);
        }
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    model
}

/// Host arrays of a toy data set.
pub struct HostBatch {
    pub obs: Vec<f32>,
    pub action: Vec<f32>,
    pub next_obs: Vec<f32>,
    pub reward: Vec<f32>,
    pub n: usize,
}

impl HostBatch {
    pub fn to_tensors(&self, spec: &ModelSpec, device: &Device) -> TransitionTensors {
        let zeros = vec![0.0; self.n];
        TransitionTensors::from_host(
            &self.obs,
            &self.action,
            &self.next_obs,
            &self.reward,
            &zeros,
            self.n,
            spec.obs_dim,
            spec.action.raw_width(),
            device,
        )
    }
}

/// `s' = A s + B a + noise`, `s ~ N(0, I_2)`, `a ~ U(-1, 1)`, noise std `sigma` per dimension;
/// the reward is `s_0 + a` (deterministic), never terminates.
pub struct LinearGaussianToy {
    pub a: [[f32; 2]; 2],
    pub b: [f32; 2],
    pub sigma: [f32; 2],
}

impl Default for LinearGaussianToy {
    fn default() -> Self {
        Self {
            a: [[0.9, 0.2], [-0.1, 0.8]],
            b: [0.5, -0.3],
            sigma: [0.1, 0.3],
        }
    }
}

impl LinearGaussianToy {
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            obs_dim: 2,
            action: ActionSpec::Continuous {
                low: vec![-1.0],
                high: vec![1.0],
            },
        }
    }

    pub fn host(&self, rng: &mut TestRng, n: usize) -> HostBatch {
        let mut hb = HostBatch {
            obs: vec![],
            action: vec![],
            next_obs: vec![],
            reward: vec![],
            n,
        };
        for _ in 0..n {
            let s: [f32; 2] = [rng.sample(StandardNormal), rng.sample(StandardNormal)];
            let a: f32 = rng.random_range(-1.0..1.0);
            for i in 0..2 {
                let noise: f32 = rng.sample(StandardNormal);
                hb.next_obs.push(
                    self.a[i][0] * s[0]
                        + self.a[i][1] * s[1]
                        + self.b[i] * a
                        + self.sigma[i] * noise,
                );
            }
            hb.obs.extend(s);
            hb.action.push(a);
            hb.reward.push(s[0] + a);
        }
        hb
    }

    pub fn batch(&self, rng: &mut TestRng, n: usize, device: &Device) -> TransitionTensors {
        self.host(rng, n).to_tensors(&self.spec(), device)
    }

    pub fn normalizer(&self, rng: &mut TestRng) -> Normalizer {
        let h = self.host(rng, 10_000);
        Normalizer::fit(&h.obs, &h.next_obs, &h.reward, 2)
    }

    /// `mean_i 0.5 ln(2 pi e sigma_i^2)`.
    pub fn conditional_entropy_per_dim(&self) -> f64 {
        self.sigma
            .iter()
            .map(|s| {
                0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * (*s as f64).powi(2)).ln()
            })
            .sum::<f64>()
            / 2.0
    }
}

/// `s ~ U(-1, 1)`, `s' = s + 1` or `s - 1` with probability 1/2 each, plus N(0, 0.05^2) noise;
/// a continuous action `a ~ U(-1, 1)` that has no effect; reward 0, never terminates.
pub struct BimodalToy {
    pub noise: f32,
}

impl Default for BimodalToy {
    fn default() -> Self {
        Self { noise: 0.05 }
    }
}

impl BimodalToy {
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            obs_dim: 1,
            action: ActionSpec::Continuous {
                low: vec![-1.0],
                high: vec![1.0],
            },
        }
    }

    pub fn host(&self, rng: &mut TestRng, n: usize) -> HostBatch {
        let mut hb = HostBatch {
            obs: vec![],
            action: vec![],
            next_obs: vec![],
            reward: vec![],
            n,
        };
        for _ in 0..n {
            let s: f32 = rng.random_range(-1.0..1.0);
            let jump = if rng.random::<bool>() { 1.0 } else { -1.0 };
            let noise: f32 = rng.sample(StandardNormal);
            hb.obs.push(s);
            hb.action.push(rng.random_range(-1.0..1.0));
            hb.next_obs.push(s + jump + self.noise * noise);
            hb.reward.push(0.0);
        }
        hb
    }

    pub fn batch(&self, rng: &mut TestRng, n: usize, device: &Device) -> TransitionTensors {
        self.host(rng, n).to_tensors(&self.spec(), device)
    }

    pub fn normalizer(&self, rng: &mut TestRng) -> Normalizer {
        let h = self.host(rng, 10_000);
        Normalizer::fit(&h.obs, &h.next_obs, &h.reward, 1)
    }

    /// Entropy of an equal mixture of two well-separated Gaussians of std `noise`:
    /// `0.5 ln(2 pi e noise^2) + ln 2`.
    pub fn conditional_entropy(&self) -> f64 {
        0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * (self.noise as f64).powi(2)).ln()
            + 2f64.ln()
    }
}
