//! The RSSM module: networks, posterior rollout (`observe`), prior rollout (`imagine`), loss.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};
use wm_kernels::silu;
use wm_models::mlp::{Mlp, MlpConfig};
use wm_models::{ActionSpec, LossOutput};

use crate::config::{ObsNoise, RssmConfig, SequenceTensors};
use crate::latent::{LatentConfig, LatentDist};
use wm_models::ModelSpec;
use wm_models::categorical::{self, CategoricalEstimator, ReinforceBaseline};

/// The recurrent state `(h, z)`.
#[derive(Clone, Debug)]
pub struct RssmState {
    /// Deterministic GRU state `h`, `[B, D]`.
    pub deter: Tensor<2>,
    /// Stochastic latent `z` (flattened one-hots for the categorical latent), `[B, S]`.
    pub stoch: Tensor<2>,
}

impl RssmState {
    /// Batch size `B`.
    pub fn batch_size(&self) -> usize {
        self.deter.dims()[0]
    }

    /// The state with both tensors detached (stop-gradient), e.g. to start imagination from
    /// posterior states without backpropagating into the representation.
    pub fn detach(&self) -> Self {
        Self {
            deter: self.deter.clone().detach(),
            stoch: self.stoch.clone().detach(),
        }
    }

    /// The features `[h, z]` the heads read, `[B, D + S]`.
    pub fn features(&self) -> Tensor<2> {
        Tensor::cat(vec![self.deter.clone(), self.stoch.clone()], 1)
    }
}

/// The result of [`Rssm::observe`]: posterior states over the sequence and the prior of each
/// step (the prior at step `t` is `p(z_t | h_t)` with the same `h_t` as the posterior).
///
/// # Shapes
/// `B` batch, `T` steps, `D` deter width, `S` stoch width.
#[derive(Clone, Debug)]
pub struct Observed {
    /// `h_t`, `[B, T, D]`.
    pub deter: Tensor<3>,
    /// Posterior samples (or modes) `z_t`, `[B, T, S]`.
    pub stoch: Tensor<3>,
    /// `q(z_t | h_t, e_t)`, tensors `[B, T, S]`.
    pub posterior: LatentDist<3>,
    /// `p(z_t | h_t)`, tensors `[B, T, S]`.
    pub prior: LatentDist<3>,
    /// The last posterior state (`t = T - 1`), to continue observing or to imagine from.
    pub last: RssmState,
}

/// The result of [`Rssm::imagine`]: step `i` is the state reached after the `i`-th action.
///
/// # Shapes
/// `B` batch, `H` horizon.
#[derive(Clone, Debug)]
pub struct ImaginedSequence {
    /// `[B, H, D]`.
    pub deter: Tensor<3>,
    /// `[B, H, S]`.
    pub stoch: Tensor<3>,
    /// The prior each `z` was drawn from, tensors `[B, H, S]`.
    pub prior: LatentDist<3>,
    /// Decoded observation means in raw units (symexp applied when `symlog`), `[B, H, O]`.
    pub obs: Tensor<3>,
    /// Predicted rewards in raw units, `[B, H]`.
    pub reward: Tensor<2>,
    /// Continue probabilities `P(not terminal)`, `[B, H]`.
    pub continue_prob: Tensor<2>,
    /// The last imagined state.
    pub last: RssmState,
}

/// Head outputs for rows of features.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// Observation means in raw units, `[N, O]`.
    pub obs: Tensor<2>,
    /// Rewards in raw units, `[N]`.
    pub reward: Tensor<1>,
    /// Continue probabilities, `[N]`.
    pub continue_prob: Tensor<1>,
}

/// Dreamer-style recurrent state-space model; see the crate docs for the equations.
#[derive(Module, Debug)]
pub struct Rssm {
    /// `symlog(o) -> e`, SiLU after every layer (including the last).
    pub encoder: Mlp,
    /// Input layer of the cell, the `z` part: `S -> hidden`, no bias.
    pub img_in_stoch: Linear,
    /// Input layer of the cell, the action part: `A -> hidden`, with the bias.
    pub img_in_action: Linear,
    /// Fused GRU gates `[x, h] -> [reset | candidate | update]`, `hidden + D -> 3 D`.
    pub gru: Linear,
    /// Prior hidden layer `h -> hidden`.
    pub prior_hidden: Linear,
    /// Prior stats layer `hidden -> stats`.
    pub prior_stats: Linear,
    /// Posterior hidden layer, the `h` part: `D -> hidden`, no bias.
    pub post_deter: Linear,
    /// Posterior hidden layer, the embedding part: `E -> hidden`, with the bias.
    pub post_embed: Linear,
    /// Posterior stats layer `hidden -> stats`.
    pub post_stats: Linear,
    /// `[h, z] -> O` (observation mean in symlog units when `symlog`); `[h, z] -> 2 O`
    /// (`[mean | raw log-std]`) with [`ObsNoise::Predicted`].
    pub decoder: Mlp,
    /// With [`ObsNoise::Learned`]: the raw (unbounded) log-std of each observation dimension,
    /// `[O]`, initialised to 0 (unit std).
    pub obs_log_std: Option<Param<Tensor<1>>>,
    /// `[h, z] -> 1` (reward in symlog units when `symlog`).
    pub reward_head: Mlp,
    /// `[h, z] -> 1` continue logit.
    pub cont_head: Mlp,
    /// With `norm`: LayerNorm of the cell's input layer, `hidden`.
    pub norm_in: Option<LayerNorm>,
    /// With `norm`: LayerNorm of the GRU's fused gate pre-activations, `3 D`.
    pub norm_gru: Option<LayerNorm>,
    /// With `norm`: LayerNorm of the prior hidden layer, `hidden`.
    pub norm_prior: Option<LayerNorm>,
    /// With `norm`: LayerNorm of the posterior hidden layer, `hidden`.
    pub norm_post: Option<LayerNorm>,
    #[module(skip)]
    config: RssmConfig,
    #[module(skip)]
    spec: ModelSpec,
    /// REINFORCE's moving-average baseline, one average per time index of the sequence.
    #[module(skip)]
    reinforce_average: Arc<Mutex<StepAverages>>,
}

/// Bias-corrected exponential moving averages of the REINFORCE return, one per time index
/// (the return of an early step sums more terms than that of a late one).
#[derive(Debug, Default)]
struct StepAverages {
    mean: Vec<f64>,
    count: i32,
}

/// Two linear layers that together are one `Linear(w0 + w1, out)` on the concatenation
/// `[x0, x1]`, initialised like it (uniform in `+-1/sqrt(w0 + w1)`, PyTorch's default); the
/// second carries the bias. Split so that the `x1` part can be computed for all time steps at
/// once outside the recurrence.
fn split_linear(w0: usize, w1: usize, out: usize, device: &Device) -> (Linear, Linear) {
    let bound = 1.0 / ((w0 + w1) as f64).sqrt();
    let init = Initializer::Uniform {
        min: -bound,
        max: bound,
    };
    let a = LinearConfig::new(w0, out)
        .with_bias(false)
        .with_initializer(init.clone())
        .init(device);
    let b = LinearConfig::new(w1, out)
        .with_initializer(init)
        .init(device);
    (a, b)
}

/// `Linear(input, output)` with PyTorch's default initialisation (uniform in
/// `+-1/sqrt(input)` for weights and bias), so that the PyTorch twin matches.
fn linear(input: usize, output: usize, device: &Device) -> Linear {
    let bound = 1.0 / (input as f64).sqrt();
    LinearConfig::new(input, output)
        .with_initializer(Initializer::Uniform {
            min: -bound,
            max: bound,
        })
        .init(device)
}

impl RssmConfig {
    /// Builds the model on `device` (seed it with [`Device::seed`] for reproducible weights).
    ///
    /// # Panics
    /// If the config or the spec is invalid.
    pub fn init(&self, spec: &ModelSpec, device: &Device) -> Rssm {
        self.validate().expect("invalid RSSM config");
        wm_models::ModelSpec {
            obs_dim: spec.obs_dim,
            action: spec.action.clone(),
        }
        .validate()
        .expect("invalid RSSM spec");
        let (d, h, s) = (self.deter, self.hidden, self.latent.stoch_width());
        let a = spec.action.input_width();
        let o = spec.obs_dim;
        let stats = self.latent.stats_width();
        let n_enc = self.encoder_hidden.len();
        let embed = self.encoder_hidden[n_enc - 1];
        let encoder =
            MlpConfig::new(o, self.encoder_hidden[..n_enc - 1].to_vec(), embed).init(device);
        let (img_in_stoch, img_in_action) = split_linear(s, a, h, device);
        let mut gru = linear(h + d, 3 * d, device);
        // DreamerV3's GRU computes `update = sigmoid(x - 1)`: fold the -1 into the bias
        // (with `norm` the -1 is applied after the LayerNorm instead, in `gru_step`).
        let fold = if self.norm { 0.0 } else { 1.0 };
        let mut bias = gru
            .bias
            .as_ref()
            .expect("gru bias")
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 bias");
        for v in &mut bias[2 * d..] {
            *v -= fold;
        }
        gru.bias = Some(Param::from_data(TensorData::new(bias, [3 * d]), device));
        let (post_deter, post_embed) = split_linear(d, embed, h, device);
        let feat = d + s;
        let norm = |width: usize| self.norm.then(|| LayerNormConfig::new(width).init(device));
        let model = Rssm {
            encoder,
            img_in_stoch,
            img_in_action,
            gru,
            prior_hidden: linear(d, h, device),
            prior_stats: linear(h, stats, device),
            post_deter,
            post_embed,
            post_stats: linear(h, stats, device),
            decoder: MlpConfig::new(
                feat,
                self.decoder_hidden.clone(),
                match self.obs_noise {
                    ObsNoise::Predicted { .. } => 2 * o,
                    ObsNoise::Unit | ObsNoise::Learned { .. } => o,
                },
            )
            .init(device),
            obs_log_std: matches!(self.obs_noise, ObsNoise::Learned { .. })
                .then(|| Param::from_tensor(Tensor::zeros([o], device))),
            reward_head: MlpConfig::new(feat, self.head_hidden.clone(), 1).init(device),
            cont_head: MlpConfig::new(feat, self.head_hidden.clone(), 1).init(device),
            reinforce_average: Arc::new(Mutex::new(StepAverages::default())),
            norm_in: norm(h),
            norm_gru: norm(3 * d),
            norm_prior: norm(h),
            norm_post: norm(h),
            config: self.clone(),
            spec: spec.clone(),
        };
        // burn initialises parameters lazily, at their first use; do it now so that the
        // weights depend only on the seed at `init` and not on what the device RNG drew in
        // between (noise of a first `observe` or `imagine`).
        model.visit(&mut Materialise);
        model
    }
}

struct Materialise;

impl burn::module::ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// `norm(x)` when the LayerNorm is configured, else `x`.
fn normed(norm: &Option<LayerNorm>, x: Tensor<2>) -> Tensor<2> {
    match norm {
        Some(norm) => norm.forward(x),
        None => x,
    }
}

/// `sign(x) ln(1 + |x|)`.
pub fn symlog<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().sign() * x.abs().log1p()
}

/// `sign(x) (exp(|x|) - 1)`, the inverse of [`symlog`].
pub fn symexp<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().sign() * x.abs().exp().sub_scalar(1.0)
}

/// Encodes raw actions: one-hot for discrete spaces (built by comparison, no host round trip),
/// `[low, high] -> [-1, 1]` for continuous ones (dimensions with an infinite or empty range
/// pass through).
///
/// # Shapes
/// - `action`: `[N, raw width]`; returns `[N, A]`
pub fn encode_action(spec: &ActionSpec, action: Tensor<2>) -> Tensor<2> {
    let [n, w] = action.dims();
    assert_eq!(
        w,
        spec.raw_width(),
        "action shape {:?}, expected [N, {}] for {spec:?}",
        action.dims(),
        spec.raw_width()
    );
    let device = action.device();
    match spec {
        ActionSpec::Discrete { n: k } => {
            let classes = Tensor::<1, Int>::arange(0..*k as i64, &device)
                .float()
                .reshape([1, *k])
                .expand([n, *k]);
            classes.equal(action.detach().expand([n, *k])).float()
        }
        ActionSpec::Continuous { .. } => {
            let (scale, shift) = spec.unit_box_affine();
            let row = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [1, w]), &device);
            action * row(scale) + row(shift)
        }
    }
}

/// Time-major rows `[T * B, W]` (row `t * B + b`) from batch-major `[B, T, W]`.
fn to_time_major(x: Tensor<3>) -> Tensor<2> {
    let [b, t, w] = x.dims();
    x.swap_dims(0, 1).reshape([t * b, w])
}

/// Batch-major `[B, T, W]` from time-major rows `[T * B, W]`.
fn to_batch_major(x: Tensor<2>, b: usize, t: usize) -> Tensor<3> {
    let [_, w] = x.dims();
    x.reshape([t, b, w]).swap_dims(0, 1)
}

/// Splits time-major rows `[T * B, W]` into `T` blocks of `B` rows.
///
/// The backward pass of a slice in burn's autodiff writes the slice's gradient into a zero
/// tensor of the *whole* input's shape, and the `T` results are then summed: `O(T^2 B W)` work
/// for a plain `split`. Splitting in two levels (about `sqrt(T)` chunks, then steps) cuts that
/// to about `2 sqrt(T)` whole-size passes (a few percent of the backward pass at B 16, T 50).
fn split_steps(x: Tensor<2>, b: usize, t: usize) -> Vec<Tensor<2>> {
    let chunk = (t as f64).sqrt().ceil() as usize;
    if t <= 4 {
        return x.split(b, 0);
    }
    x.split(chunk * b, 0)
        .into_iter()
        .flat_map(|c| c.split(b, 0))
        .collect()
}

/// A posterior rollout in time-major rows (`t * B + b`).
struct Rollout {
    deter: Tensor<2>,
    stoch: Tensor<2>,
    post: LatentDist<2>,
    prior: LatentDist<2>,
    last: RssmState,
}

impl Rssm {
    /// The config it was built with.
    pub fn config(&self) -> &RssmConfig {
        &self.config
    }

    /// The spec it was built for.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Width `S` of the stochastic state.
    pub fn stoch_width(&self) -> usize {
        self.config.latent.stoch_width()
    }

    /// The initial state: zeros for both `h` and `z` (PlaNet, DreamerV1/V2). Episode starts
    /// (`is_first`) reset the state to this, and the action before them to zeros.
    ///
    /// # Shapes
    /// - returns `deter [batch, D]`, `stoch [batch, S]`
    pub fn initial(&self, batch: usize, device: &Device) -> RssmState {
        RssmState {
            deter: Tensor::zeros([batch, self.config.deter], device),
            stoch: Tensor::zeros([batch, self.stoch_width()], device),
        }
    }

    /// One GRU step in the DreamerV3 form with a single fused matmul:
    /// `[r, c, u] = [x, h] W + b`, `r = sigmoid(r)`, `c = tanh(r * c)`, `u = sigmoid(u)` (the
    /// `-1` of DreamerV3's `sigmoid(u - 1)` lives in the bias initialisation),
    /// `h' = h + u * (c - h)` (the gates and the update are one fused operation,
    /// [`wm_kernels::gru_gate`]).
    /// With `norm`, the fused pre-activations are layer-normalised first and the `-1` is
    /// subtracted after the norm, as in DreamerV3.
    fn gru_step(&self, x: Tensor<2>, h: Tensor<2>) -> Tensor<2> {
        let parts = self.gru.forward(Tensor::cat(vec![x, h.clone()], 1));
        let (parts, update_shift) = match &self.norm_gru {
            Some(norm) => (norm.forward(parts), 1.0),
            None => (parts, 0.0),
        };
        wm_kernels::gru_gate(parts, h, update_shift)
    }

    /// `h_t` from `h_{t-1}`, `z_{t-1}` and the projected action `a_{t-1} W_a + b`.
    pub(crate) fn recurrent_step(&self, state: &RssmState, action_proj: Tensor<2>) -> Tensor<2> {
        let x = normed(
            &self.norm_in,
            self.img_in_stoch.forward(state.stoch.clone()) + action_proj,
        );
        self.gru_step(silu(x), state.deter.clone())
    }

    /// The prior `p(z | h)` for rows of `h`.
    ///
    /// # Shapes
    /// - `deter`: `[N, D]`; the distribution's tensors are `[N, S]`
    pub fn prior(&self, deter: Tensor<2>) -> LatentDist<2> {
        let hidden = normed(&self.norm_prior, self.prior_hidden.forward(deter));
        self.config
            .latent
            .dist(self.prior_stats.forward(silu(hidden)))
    }

    /// Encoder embeddings of raw observations (symlog applied first when configured).
    ///
    /// # Shapes
    /// - `obs`: `[N, O]`; returns `[N, E]`
    pub fn embed(&self, obs: Tensor<2>) -> Tensor<2> {
        let x = if self.config.symlog { symlog(obs) } else { obs };
        silu(self.encoder.forward(x))
    }

    /// Decodes rows of states: observation means and rewards in raw units (symexp applied when
    /// `symlog`), continue probabilities.
    ///
    /// # Shapes
    /// - `deter`: `[N, D]`, `stoch`: `[N, S]`; returns `[N, O]`, `[N]`, `[N]`
    pub fn decode(&self, deter: Tensor<2>, stoch: Tensor<2>) -> Decoded {
        let [n, _] = deter.dims();
        let feat = Tensor::cat(vec![deter, stoch], 1);
        let (obs, _) = self.obs_dist(feat.clone());
        let reward = self.reward_head.forward(feat.clone()).reshape([n]);
        let cont = sigmoid(self.cont_head.forward(feat).reshape([n]));
        if self.config.symlog {
            Decoded {
                obs: symexp(obs),
                reward: symexp(reward),
                continue_prob: cont,
            }
        } else {
            Decoded {
                obs,
                reward,
                continue_prob: cont,
            }
        }
    }

    /// The observation decoder's Gaussian on features `[h, z]`: its mean and, unless
    /// [`ObsNoise::Unit`], its soft-bounded log-std (`None` means a unit std), both in symlog
    /// units when `symlog`.
    ///
    /// # Shapes
    /// - `feat`: `[N, D + S]`; returns `[N, O]` and `[N, O]`
    pub fn obs_dist(&self, feat: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        let [n, _] = feat.dims();
        let o = self.spec.obs_dim;
        let out = self.decoder.forward(feat);
        match self.config.obs_noise {
            ObsNoise::Unit => (out, None),
            ObsNoise::Learned {
                min_log_std,
                max_log_std,
            } => {
                let raw = self
                    .obs_log_std
                    .as_ref()
                    .expect("ObsNoise::Learned has its parameter")
                    .val();
                let log_std = wm_models::dist::soft_bound_log_std(raw, min_log_std, max_log_std)
                    .reshape([1, o])
                    .expand([n, o]);
                (out, Some(log_std))
            }
            ObsNoise::Predicted {
                min_log_std,
                max_log_std,
            } => {
                let mean = out.clone().narrow(1, 0, o);
                let log_std = wm_models::dist::soft_bound_log_std(
                    out.narrow(1, o, o),
                    min_log_std,
                    max_log_std,
                );
                (mean, Some(log_std))
            }
        }
    }

    /// The reward (raw units) and continue probability of rows of states, without decoding the
    /// observation: what a planner scores. Equal to [`Rssm::decode`]'s `reward` and `continue_prob`.
    ///
    /// # Shapes
    /// - `deter`: `[N, D]`, `stoch`: `[N, S]`; returns `[N]`, `[N]`
    pub fn decode_reward_cont(&self, deter: Tensor<2>, stoch: Tensor<2>) -> (Tensor<1>, Tensor<1>) {
        let [n, _] = deter.dims();
        let feat = Tensor::cat(vec![deter, stoch], 1);
        let reward = self.reward_head.forward(feat.clone()).reshape([n]);
        let cont = sigmoid(self.cont_head.forward(feat).reshape([n]));
        (
            if self.config.symlog {
                symexp(reward)
            } else {
                reward
            },
            cont,
        )
    }

    /// The posterior rollout on time-major rows. `first` is `is_first` on the host, time-major.
    #[allow(clippy::too_many_arguments)]
    fn rollout(
        &self,
        obs: Tensor<2>,
        action: Tensor<2>,
        first: &[f32],
        b: usize,
        t: usize,
        start: Option<RssmState>,
        sample: bool,
        noise: Option<Tensor<2>>,
    ) -> Rollout {
        let device = obs.device();
        let n = b * t;
        assert_eq!(
            first.len(),
            n,
            "is_first has {} values, expected {n}",
            first.len()
        );
        let latent = &self.config.latent;
        let any_first = first.iter().any(|f| *f > 0.5);

        // Everything that does not depend on the recurrence, once over all rows.
        let embed_proj = split_steps(self.post_embed.forward(self.embed(obs)), b, t);
        let mut action = encode_action(&self.spec.action, action);
        if any_first {
            let keep: Vec<f32> = first.iter().map(|f| 1.0 - f).collect();
            action = action * Tensor::<2>::from_data(TensorData::new(keep, [n, 1]), &device);
        }
        let action_proj = split_steps(self.img_in_action.forward(action), b, t);
        let mut noise = if sample {
            noise
                .unwrap_or_else(|| latent.noise(n, &device))
                .split(b, 0)
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None; t]
        };

        let fresh = start.is_none();
        let mut state = start.unwrap_or_else(|| self.initial(b, &device));
        assert_eq!(
            state.batch_size(),
            b,
            "start state has batch {}, expected {b}",
            state.batch_size()
        );
        let mut deters = Vec::with_capacity(t);
        let mut stochs = Vec::with_capacity(t);
        let mut posts = Vec::with_capacity(t);
        for (step, (embed_t, action_t)) in embed_proj.into_iter().zip(action_proj).enumerate() {
            let firsts = &first[step * b..(step + 1) * b];
            if firsts.iter().any(|f| *f > 0.5) && !(fresh && step == 0) {
                let keep: Vec<f32> = firsts.iter().map(|f| 1.0 - f).collect();
                let keep = Tensor::<2>::from_data(TensorData::new(keep, [b, 1]), &device);
                state = RssmState {
                    deter: state.deter * keep.clone(),
                    stoch: state.stoch * keep,
                };
            }
            let deter = self.recurrent_step(&state, action_t);
            let hidden = silu(normed(
                &self.norm_post,
                self.post_deter.forward(deter.clone()) + embed_t,
            ));
            let post = latent.dist(self.post_stats.forward(hidden));
            let stoch = latent.sample(&post, noise[step].take());
            deters.push(deter.clone());
            stochs.push(stoch.clone());
            posts.push(post);
            state = RssmState { deter, stoch };
        }
        let deter = Tensor::cat(deters, 0);
        let prior = self.prior(deter.clone());
        Rollout {
            deter,
            stoch: Tensor::cat(stochs, 0),
            post: LatentDist::cat(posts, 0),
            prior,
            last: state,
        }
    }

    /// Runs the posterior over a sequence: for each step `t`, reset where `is_first[b, t]`,
    /// `h_t = GRU(h_{t-1}, [z_{t-1}, a_t])`, `z_t ~ q(z_t | h_t, e_t)` (its mode when `sample`
    /// is false), and the prior `p(z_t | h_t)`.
    ///
    /// `action[b, t]` is the action that led to `obs[b, t]` (replay alignment). Where
    /// `is_first[b, t]` the previous state and the action are replaced by the initial state and
    /// zeros. `start` continues from an earlier state (default: [`Rssm::initial`]).
    ///
    /// Noise comes from the device RNG, drawn in one call for the whole sequence.
    ///
    /// # Shapes
    /// - `obs`: `[B, T, O]`, `action`: `[B, T, raw action width]`, `is_first`: `[B, T]`
    /// - `start`: `[B, D]`, `[B, S]`
    /// - returns [`Observed`] with `[B, T, ..]` tensors
    pub fn observe(
        &self,
        obs: Tensor<3>,
        action: Tensor<3>,
        is_first: Tensor<2>,
        start: Option<RssmState>,
        sample: bool,
    ) -> Observed {
        let [b, t, o] = obs.dims();
        self.check_sequence(&obs, &action, &is_first);
        assert_eq!(o, self.spec.obs_dim);
        let first = host_time_major(is_first);
        let r = self.rollout(
            to_time_major(obs),
            to_time_major(action),
            &first,
            b,
            t,
            start,
            sample,
            None,
        );
        Observed {
            deter: to_batch_major(r.deter, b, t),
            stoch: to_batch_major(r.stoch, b, t),
            posterior: r.post.map(|x| to_batch_major(x, b, t)),
            prior: r.prior.map(|x| to_batch_major(x, b, t)),
            last: r.last,
        }
    }

    fn check_sequence(&self, obs: &Tensor<3>, action: &Tensor<3>, is_first: &Tensor<2>) {
        let [b, t, o] = obs.dims();
        let w = self.spec.action.raw_width();
        assert!(
            o == self.spec.obs_dim && action.dims() == [b, t, w] && is_first.dims() == [b, t],
            "sequence shapes obs {:?}, action {:?}, is_first {:?}; expected [B, T, {}], [B, T, {w}], [B, T]",
            obs.dims(),
            action.dims(),
            is_first.dims(),
            self.spec.obs_dim
        );
    }

    /// One prior step of the recurrence from `state` under raw actions: `h' = GRU(h, [z, a])`,
    /// `z' ~ p(z' | h')` (its mode when `sample` is false). Noise: one draw of `[B, S]` from the
    /// device RNG when sampling.
    ///
    /// # Shapes
    /// - `state`: `[B, D]`, `[B, S]`; `action`: `[B, raw action width]`; returns `[B, D]`, `[B, S]`
    pub fn img_step(&self, state: &RssmState, action: Tensor<2>, sample: bool) -> RssmState {
        let b = state.batch_size();
        let w = self.spec.action.raw_width();
        assert_eq!(
            action.dims(),
            [b, w],
            "action shape {:?}, expected [{b}, {w}]",
            action.dims()
        );
        let action_proj = self
            .img_in_action
            .forward(encode_action(&self.spec.action, action));
        self.prior_step(state, action_proj, sample).0
    }

    /// `img_step` on a projected action; also returns the prior the new `z` was drawn from.
    fn prior_step(
        &self,
        state: &RssmState,
        action_proj: Tensor<2>,
        sample: bool,
    ) -> (RssmState, LatentDist<2>) {
        let latent = &self.config.latent;
        let deter = self.recurrent_step(state, action_proj);
        let prior = self.prior(deter.clone());
        let noise = sample.then(|| latent.noise(state.batch_size(), &deter.device()));
        // REINFORCE is the posterior's estimator; imagined samples stay pathwise.
        let stoch = latent.pathwise().sample(&prior, noise);
        (RssmState { deter, stoch }, prior)
    }

    /// Rolls the prior forward from `start` under a fixed action sequence: for each step `i`,
    /// `h = GRU(h, [z, a_i])`, `z ~ p(z | h)` (its mode when `sample` is false); then decodes all
    /// imagined states at once. Differentiable when the model and `start` are on an autodiff
    /// device (detach `start` to keep gradients out of the representation).
    ///
    /// Noise comes from the device RNG, one draw of `[B, S]` per step, so a seeded device
    /// gives the same rollout.
    ///
    /// # Shapes
    /// - `start`: `[B, D]`, `[B, S]`; `seq`: `[B, H, raw action width]`
    /// - returns [`ImaginedSequence`] with `[B, H, ..]` tensors
    ///
    /// Imagination under a policy goes through the one imagination loop of
    /// `wm_imagine::WorldModel::imagine`, which steps the model with [`Rssm::img_step`].
    pub fn imagine(&self, start: RssmState, seq: Tensor<3>, sample: bool) -> ImaginedSequence {
        let b = start.batch_size();
        let w = self.spec.action.raw_width();
        let [sb, horizon, sw] = seq.dims();
        assert!(
            sb == b && sw == w,
            "action sequence shape {:?}, expected [{b}, H, {w}]",
            seq.dims()
        );
        assert!(horizon > 0, "imagine needs a horizon > 0");
        let projected = self
            .img_in_action
            .forward(encode_action(&self.spec.action, to_time_major(seq)))
            .split(b, 0);
        let mut state = start;
        let mut deters = Vec::with_capacity(horizon);
        let mut stochs = Vec::with_capacity(horizon);
        let mut priors = Vec::with_capacity(horizon);
        for action_proj in projected {
            let (next, prior) = self.prior_step(&state, action_proj, sample);
            deters.push(next.deter.clone());
            stochs.push(next.stoch.clone());
            priors.push(prior);
            state = next;
        }
        let deter = Tensor::cat(deters, 0);
        let stoch = Tensor::cat(stochs, 0);
        let decoded = self.decode(deter.clone(), stoch.clone());
        let t = horizon;
        let bm1 = |x: Tensor<1>| x.reshape([t, b]).swap_dims(0, 1);
        ImaginedSequence {
            deter: to_batch_major(deter, b, t),
            stoch: to_batch_major(stoch, b, t),
            prior: LatentDist::cat(priors, 0).map(|x| to_batch_major(x, b, t)),
            obs: to_batch_major(decoded.obs, b, t),
            reward: bm1(decoded.reward),
            continue_prob: bm1(decoded.continue_prob),
            last: state,
        }
    }

    /// The training loss on a batch of sequences (differentiable on an autodiff device):
    ///
    /// - `recon`: `0.5 sum_o (decoder(h_t, z_t) - symlog(o_t))^2`, mean over `(b, t)`: the
    ///   unit-variance Gaussian NLL in symlog space without its constant (DreamerV3's symlog
    ///   MSE); with a learned std ([`ObsNoise`]) the Gaussian NLL without its constant,
    ///   `sum_o [0.5 ((mean - symlog(o_t)) / std)^2 + ln std]`;
    /// - `reward`: `0.5 (reward_head - symlog(r_t))^2`, mean;
    /// - `cont`: binary cross-entropy of the continue logit against `1 - is_terminal`, mean;
    /// - `dyn`: `max(free_nats, KL(sg(q_t) || p_t))`, mean over `(b, t)`;
    /// - `rep`: `max(free_nats, KL(q_t || sg(p_t)))`, mean over `(b, t)`.
    ///
    /// All steps count, including `is_first` ones (their reward is 0 and their prior is the
    /// prior after a reset). Metrics: `kl` (mean raw KL, the value of both `dyn` and `rep`
    /// before free bits), `kl_below_free` (fraction of steps under the free-bits floor),
    /// `post_spread` and `prior_spread` (mean std, or mean entropy per group in nats for
    /// categoricals: `ln K` is uniform, 0 deterministic), `recon_mse`, `obs_std` (the decoder's
    /// mean std, 1 for [`ObsNoise::Unit`]), and the continue head's
    /// calibration: `cont_prob_terminal`, `cont_prob_nonterminal` (mean predicted
    /// `P(continue)` on terminal and other steps) and `cont_accuracy`.
    ///
    /// With the categorical latent's `Reinforce` estimator the posterior sample `z_t` is the
    /// one-hot without a gradient, and a `reinforce` term (weight 1, value 0) gives every
    /// parameter upstream of `q(z_t | h_t, o_t)` the score-function gradient
    /// `(R_t - b_t) ∇ ln q(z_t)`, where `R_t` is the weighted loss that `z_t` can change: the
    /// decoder terms (`recon`, `reward`, `cont`) of steps `t..` and the KL terms (`dyn`, `rep`)
    /// of steps `t+1..`, up to the next `is_first` (a reset cuts the recurrence); `b_t` is 0
    /// or, with `MovingAverage`, a bias-corrected moving average of `R_t`'s batch mean per
    /// time index. Everything else stays pathwise, the posterior's `rep` KL included.
    pub fn loss(&self, batch: &SequenceTensors) -> LossOutput {
        self.loss_with_noise(batch, None).0
    }

    /// [`Rssm::loss`] with the posterior noise given (`[T B, S]` time-major, as
    /// [`LatentConfig::noise`] draws it) instead of drawn; also returns `ln q(z_t)` of the
    /// categorical posterior's samples, `[T B]` time-major.
    fn loss_with_noise(
        &self,
        batch: &SequenceTensors,
        noise: Option<Tensor<2>>,
    ) -> (LossOutput, Option<Tensor<1>>) {
        let (b, t) = batch.dims();
        let n = b * t;
        self.check_sequence(&batch.obs, &batch.action, &batch.is_first);
        assert!(
            batch.reward.dims() == [b, t] && batch.is_terminal.dims() == [b, t],
            "reward shape {:?}, is_terminal shape {:?}, expected [{b}, {t}]",
            batch.reward.dims(),
            batch.is_terminal.dims()
        );
        let first = host_time_major(batch.is_first.clone());
        let obs = to_time_major(batch.obs.clone());
        let roll = self.rollout(
            obs.clone(),
            to_time_major(batch.action.clone()),
            &first,
            b,
            t,
            None,
            true,
            noise,
        );
        let tm1 = |x: Tensor<2>| x.swap_dims(0, 1).reshape([n]);
        let c = &self.config;
        let (obs_target, reward_target) = if c.symlog {
            (symlog(obs), symlog(tm1(batch.reward.clone())))
        } else {
            (obs, tm1(batch.reward.clone()))
        };
        let stoch = roll.stoch.clone();
        let feat = Tensor::cat(vec![roll.deter, roll.stoch], 1);
        let (obs_mean, obs_log_std) = self.obs_dist(feat.clone());
        let obs_err = (obs_mean - obs_target).square();
        let recon_mse = obs_err.clone().detach().mean();
        // Per-step terms, `[T B]` time-major.
        let (recon_n, obs_std) = match obs_log_std {
            None => {
                let ones = Tensor::<1>::ones([1], &obs_err.device());
                (obs_err.sum_dim(1).reshape([n]).mul_scalar(0.5), ones)
            }
            Some(log_std) => (
                ((obs_err * log_std.clone().mul_scalar(-2.0).exp()).mul_scalar(0.5)
                    + log_std.clone())
                .sum_dim(1)
                .reshape([n]),
                log_std.detach().exp().mean(),
            ),
        };
        let reward_n = (self.reward_head.forward(feat.clone()).reshape([n]) - reward_target)
            .square()
            .mul_scalar(0.5);
        let terminal = tm1(batch.is_terminal.clone());
        let cont_target = terminal.clone().neg().add_scalar(1.0);
        let cont_logit = self.cont_head.forward(feat).reshape([n]);
        let cont_prob = sigmoid(cont_logit.clone().detach());
        let cont_n = wm_models::dist::bce_with_logits(cont_logit, cont_target.clone());
        // Calibration of the continue head: the mean predicted P(continue) on terminal steps
        // (should be near 0; 0 when the batch has none) and on the others (near 1), and the
        // accuracy of `P(continue) > 0.5`.
        let n_terminal = terminal.clone().sum();
        let cont_on_terminal =
            (cont_prob.clone() * terminal.clone()).sum() / n_terminal.clone().clamp_min(1.0);
        let cont_on_others = (cont_prob.clone() * cont_target.clone()).sum()
            / n_terminal.neg().add_scalar(n as f64).clamp_min(1.0);
        let cont_accuracy = cont_prob
            .greater_elem(0.5)
            .float()
            .equal(cont_target)
            .float()
            .mean();
        let kl_dyn = roll.post.detach().kl(&roll.prior);
        let kl_raw = kl_dyn.clone().detach().mean();
        // Fraction of steps whose KL is under the free-bits floor (no KL gradient there).
        let kl_below_free = kl_dyn
            .clone()
            .detach()
            .lower_elem(c.free_nats)
            .float()
            .mean();
        let dyn_n = kl_dyn.clamp_min(c.free_nats);
        let rep_n = roll.post.kl(&roll.prior.detach()).clamp_min(c.free_nats);
        let log_q = match &roll.post {
            LatentDist::Categorical { probs } => {
                Some(categorical::log_prob(probs.clone(), stoch.detach()))
            }
            LatentDist::Gaussian { .. } => None,
        };
        let mut terms = Vec::new();
        if let (
            LatentConfig::Categorical {
                estimator: CategoricalEstimator::Reinforce { baseline },
                ..
            },
            Some(log_q),
        ) = (&c.latent, &log_q)
        {
            let decoded = (recon_n.clone().mul_scalar(c.recon_weight)
                + reward_n.clone().mul_scalar(c.reward_weight)
                + cont_n.clone().mul_scalar(c.cont_weight))
            .detach();
            let kl = (dyn_n.clone().mul_scalar(c.dyn_weight)
                + rep_n.clone().mul_scalar(c.rep_weight))
            .detach();
            let advantage = self.reinforce_advantage(decoded, kl, &first, b, t, baseline);
            // Value 0; gradient (R_t - b_t) ∇ ln q(z_t).
            let surrogate = (advantage * (log_q.clone() - log_q.clone().detach())).mean();
            terms.push(("reinforce", surrogate, 1.0));
        }
        let metrics = vec![
            ("kl", kl_raw),
            ("kl_below_free", kl_below_free),
            ("post_spread", roll.post.detach().spread(c.latent.groups())),
            (
                "prior_spread",
                roll.prior.detach().spread(c.latent.groups()),
            ),
            ("recon_mse", recon_mse),
            ("obs_std", obs_std),
            ("cont_prob_terminal", cont_on_terminal),
            ("cont_prob_nonterminal", cont_on_others),
            ("cont_accuracy", cont_accuracy),
        ];
        terms.extend([
            ("recon", recon_n.mean(), c.recon_weight),
            ("reward", reward_n.mean(), c.reward_weight),
            ("cont", cont_n.mean(), c.cont_weight),
            ("dyn", dyn_n.mean(), c.dyn_weight),
            ("rep", rep_n.mean(), c.rep_weight),
        ]);
        (assemble_loss(terms, metrics), log_q)
    }

    /// REINFORCE's `R_t - b_t` (see [`Rssm::loss`]), `[T B]` time-major, from the weighted
    /// per-step decoder and KL terms (`[T B]`, detached), computed on the host (one transfer
    /// each way).
    fn reinforce_advantage(
        &self,
        decoded: Tensor<1>,
        kl: Tensor<1>,
        first: &[f32],
        b: usize,
        t: usize,
        baseline: &ReinforceBaseline,
    ) -> Tensor<1> {
        let device = decoded.device();
        let host = |x: Tensor<1>| {
            x.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 loss terms")
        };
        let (decoded, kl) = (host(decoded), host(kl));
        let mut ret = vec![0.0f64; b * t];
        for col in 0..b {
            // What step `step - 1` inherits: `K_step + R_step`, unless `step` starts anew.
            let mut carry = 0.0f64;
            for step in (0..t).rev() {
                let i = step * b + col;
                ret[i] = decoded[i] as f64 + carry;
                carry = if first[i] > 0.5 {
                    0.0
                } else {
                    kl[i] as f64 + ret[i]
                };
            }
        }
        let offsets: Vec<f64> = match baseline {
            ReinforceBaseline::MovingAverage { decay } => {
                let step_means: Vec<f64> = (0..t)
                    .map(|step| ret[step * b..(step + 1) * b].iter().sum::<f64>() / b as f64)
                    .collect();
                let mut state = self
                    .reinforce_average
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if state.mean.len() != t {
                    *state = StepAverages {
                        mean: vec![0.0; t],
                        count: 0,
                    };
                }
                let correction = 1.0 - decay.powi(state.count);
                let offsets = state
                    .mean
                    .iter()
                    .map(|m| {
                        if state.count == 0 {
                            0.0
                        } else {
                            m / correction
                        }
                    })
                    .collect();
                for (m, x) in state.mean.iter_mut().zip(&step_means) {
                    *m = decay * *m + (1.0 - decay) * x;
                }
                state.count = state.count.saturating_add(1);
                offsets
            }
            // Refused by validation for the RSSM: no baseline.
            ReinforceBaseline::None
            | ReinforceBaseline::Learned { .. }
            | ReinforceBaseline::LeaveOneOut { .. } => vec![0.0; t],
        };
        let advantage: Vec<f32> = ret
            .iter()
            .enumerate()
            .map(|(i, r)| (r - offsets[i / b]) as f32)
            .collect();
        Tensor::from_data(TensorData::new(advantage, [b * t]), &device)
    }
}

/// `is_first` `[B, T]` read back to the host in time-major order (`t * B + b`).
fn host_time_major(is_first: Tensor<2>) -> Vec<f32> {
    is_first
        .detach()
        .swap_dims(0, 1)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 is_first")
}

/// Weighs the terms and reads the metrics back in one transfer.
fn assemble_loss(
    terms: Vec<(&str, Tensor<1>, f64)>,
    metrics: Vec<(&str, Tensor<1>)>,
) -> LossOutput {
    let total = terms
        .iter()
        .map(|(_, t, w)| t.clone().mul_scalar(*w))
        .reduce(|a, b| a + b)
        .expect("at least one term");
    let weights = terms.iter().map(|(k, _, w)| (k.to_string(), *w)).collect();
    let terms: BTreeMap<String, Tensor<1>> = terms
        .into_iter()
        .map(|(k, t, _)| (k.to_string(), t))
        .collect();
    LossOutput {
        total,
        terms,
        weights,
        metrics: wm_models::read_metrics(metrics),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latent::LatentConfig;
    use crate::test_util::seeded;
    use crate::train::update_step;
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::tensor::Distribution;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn tiny(latent: LatentConfig) -> RssmConfig {
        RssmConfig {
            deter: 8,
            hidden: 8,
            latent,
            encoder_hidden: vec![8],
            decoder_hidden: vec![8],
            head_hidden: vec![8],
            ..RssmConfig::default()
        }
    }

    fn small_cat() -> LatentConfig {
        LatentConfig::Categorical {
            groups: 3,
            classes: 4,
            unimix: 0.01,
            estimator: Default::default(),
        }
    }

    fn small_gauss() -> LatentConfig {
        LatentConfig::Gaussian {
            size: 4,
            min_std: 0.1,
        }
    }

    fn continuous_spec() -> ModelSpec {
        ModelSpec {
            obs_dim: 3,
            action: ActionSpec::Continuous {
                low: vec![-2.0],
                high: vec![2.0],
            },
        }
    }

    /// Random sequences with `is_first` at `t = 0` and at the given `(b, t)` positions.
    fn random_batch(
        spec: &ModelSpec,
        b: usize,
        t: usize,
        firsts: &[(usize, usize)],
        device: &Device,
    ) -> SequenceTensors {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let o = spec.obs_dim;
        let w = spec.action.raw_width();
        let obs: Vec<f32> = (0..b * t * o)
            .map(|_| rng.random_range(-3.0..3.0))
            .collect();
        let action: Vec<f32> = match &spec.action {
            ActionSpec::Discrete { n } => {
                (0..b * t).map(|_| rng.random_range(0..*n) as f32).collect()
            }
            ActionSpec::Continuous { .. } => (0..b * t * w)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect(),
        };
        let reward: Vec<f32> = (0..b * t).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut is_first = vec![0.0; b * t];
        for bi in 0..b {
            is_first[bi * t] = 1.0;
        }
        for &(bi, ti) in firsts {
            is_first[bi * t + ti] = 1.0;
        }
        let is_terminal: Vec<f32> = (0..b * t)
            .map(|i| if i % 7 == 6 { 1.0 } else { 0.0 })
            .collect();
        SequenceTensors::from_host(
            &obs,
            &action,
            &reward,
            &is_first,
            &is_terminal,
            b,
            t,
            o,
            w,
            device,
        )
    }

    fn grad_size<const D: usize>(grads: &GradientsParams, p: &Param<Tensor<D>>) -> f32 {
        grads
            .get::<D>(p.id)
            .map_or(0.0, |g| g.abs().sum().into_scalar::<f32>())
    }

    /// Gradient sizes of the prior head, posterior head, encoder, posterior embedding layer and
    /// GRU for one loss term.
    fn term_grads(model: &Rssm, batch: &SequenceTensors, term: &str) -> [f32; 5] {
        let loss = model.loss(batch);
        let grads = GradientsParams::from_grads(loss.terms[term].backward(), model);
        [
            grad_size(&grads, &model.prior_stats.weight)
                + grad_size(&grads, &model.prior_hidden.weight),
            grad_size(&grads, &model.post_stats.weight)
                + grad_size(&grads, &model.post_deter.weight),
            grad_size(&grads, &model.encoder.layers[0].weight),
            grad_size(&grads, &model.post_embed.weight),
            grad_size(&grads, &model.gru.weight),
        ]
    }

    #[test]
    fn kl_balancing_sends_dyn_to_the_prior_and_rep_to_the_posterior() {
        for latent in [small_gauss(), small_cat()] {
            let (_guard, device) = seeded(1);
            let device = device.autodiff();
            let spec = continuous_spec();
            let config = RssmConfig {
                free_nats: 0.0,
                ..tiny(latent.clone())
            };
            let model = config.init(&spec, &device);
            // One step from the initial state: h_1 does not depend on the posterior.
            let batch = random_batch(&spec, 4, 1, &[], &device);
            let [prior, post, enc, embed, gru] = term_grads(&model, &batch, "dyn");
            assert!(
                prior > 0.0 && gru > 0.0,
                "{latent:?}: dyn must reach the prior and GRU: {prior} {gru}"
            );
            assert_eq!(
                (post, enc, embed),
                (0.0, 0.0, 0.0),
                "{latent:?}: dyn reached the posterior/encoder"
            );
            let [prior, post, enc, embed, gru] = term_grads(&model, &batch, "rep");
            assert!(
                post > 0.0 && enc > 0.0 && embed > 0.0 && gru > 0.0,
                "{latent:?}: rep must reach the posterior, encoder and GRU: {post} {enc} {embed} {gru}"
            );
            assert_eq!(prior, 0.0, "{latent:?}: rep reached the prior head");

            // Over several steps rep still never reaches the prior head, while dyn reaches the
            // encoder through the sampled z_{t-1} that feeds h_t.
            let batch = random_batch(&spec, 4, 3, &[], &device);
            assert_eq!(term_grads(&model, &batch, "rep")[0], 0.0, "{latent:?}");
            assert!(term_grads(&model, &batch, "dyn")[2] > 0.0, "{latent:?}");
        }
    }

    #[test]
    fn free_bits_give_zero_kl_gradient_below_the_threshold() {
        for latent in [small_gauss(), small_cat()] {
            let (_guard, device) = seeded(2);
            let device = device.autodiff();
            let spec = continuous_spec();
            let batch = random_batch(&spec, 4, 5, &[], &device);
            for (free_nats, expect_zero) in [(0.0, false), (1e6, true)] {
                let model = RssmConfig {
                    free_nats,
                    ..tiny(latent.clone())
                }
                .init(&spec, &device);
                for term in ["dyn", "rep"] {
                    let loss = model.loss(&batch);
                    assert!(
                        (loss.terms[term].clone().into_scalar::<f32>() as f64 - free_nats.max(0.0))
                            .abs()
                            < 1e-3
                            || !expect_zero,
                        "below the threshold the term is the threshold"
                    );
                    let g = term_grads(&model, &batch, term);
                    let total: f32 = g.iter().sum();
                    if expect_zero {
                        assert_eq!(total, 0.0, "{latent:?} {term} free_nats {free_nats}: {g:?}");
                    } else {
                        assert!(
                            total > 0.0,
                            "{latent:?} {term} free_nats {free_nats}: {g:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn is_first_resets_the_state_like_a_separate_run_of_the_second_episode() {
        for latent in [small_gauss(), small_cat()] {
            let (_guard, device) = seeded(3);
            let spec = continuous_spec();
            let model = tiny(latent.clone()).init(&spec, &device);
            let (t, boundary) = (6, 3);
            let batch = random_batch(&spec, 2, t, &[(0, boundary)], &device);
            // Garbage in the action at the episode start: it must be ignored.
            let action = batch.action.clone().slice_assign(
                [0..1, boundary..boundary + 1, 0..1],
                Tensor::<3>::full([1, 1, 1], 1.7, &device),
            );
            let whole = model.observe(
                batch.obs.clone(),
                action,
                batch.is_first.clone(),
                None,
                false,
            );
            let second = model.observe(
                batch.obs.clone().slice([0..1, boundary..t]),
                batch.action.clone().slice([0..1, boundary..t]),
                batch.is_first.clone().slice([0..1, boundary..t]),
                None,
                false,
            );
            let a = vec(whole.deter.clone().slice([0..1, boundary..t]));
            let b = vec(second.deter);
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() < 1e-5,
                    "{latent:?}: deter after the reset {a:?} vs {b:?}"
                );
            }
            // Equal up to rounding: libtorch's kernels differ with the batch size (1e-8 seen).
            let (a, b) = (
                vec(whole.stoch.clone().slice([0..1, boundary..t])),
                vec(second.stoch),
            );
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() < 1e-5,
                    "{latent:?}: stoch after the reset {a:?} vs {b:?}"
                );
            }
            // Without the reset the states differ (so the comparison above means something).
            let no_reset = batch.is_first.clone().slice_assign(
                [0..1, boundary..boundary + 1],
                Tensor::zeros([1, 1], &device),
            );
            let carried = model.observe(
                batch.obs.clone(),
                batch.action.clone(),
                no_reset,
                None,
                false,
            );
            let c = vec(carried.deter.slice([0..1, boundary..t]));
            assert!(
                a.iter().zip(&c).any(|(x, y)| (x - y).abs() > 1e-4),
                "{latent:?}"
            );
            // The shapes of `observe`.
            assert_eq!(whole.deter.dims(), [2, t, 8]);
            assert_eq!(whole.stoch.dims(), [2, t, latent.stoch_width()]);
            assert_eq!(whole.last.deter.dims(), [2, 8]);
            assert_eq!(
                vec(whole.last.deter),
                vec(whole.deter.slice([0..2, t - 1..t]).reshape([2, 8]))
            );
        }
    }

    #[test]
    fn imagine_with_fixed_actions_is_reproducible_given_a_seed_and_has_the_documented_shapes() {
        for latent in [small_gauss(), small_cat()] {
            let (_guard, device) = seeded(4);
            let spec = ModelSpec {
                obs_dim: 3,
                action: ActionSpec::Discrete { n: 3 },
            };
            let model = tiny(latent.clone()).init(&spec, &device);
            let (b, h) = (3, 5);
            let actions =
                Tensor::<3>::from_floats([[[0.0], [1.0], [2.0], [1.0], [0.0]]; 3], &device);
            let start = RssmState {
                deter: Tensor::random([b, 8], Distribution::Normal(0.0, 1.0), &device),
                stoch: model.initial(b, &device).stoch,
            };
            let run = |seed| {
                device.seed(seed);
                model.imagine(start.clone(), actions.clone(), true)
            };
            let (x, y, z) = (run(11), run(11), run(12));
            assert_eq!(x.deter.dims(), [b, h, 8]);
            assert_eq!(x.stoch.dims(), [b, h, latent.stoch_width()]);
            assert_eq!(x.obs.dims(), [b, h, 3]);
            assert_eq!(x.reward.dims(), [b, h]);
            assert_eq!(x.continue_prob.dims(), [b, h]);
            assert_eq!(x.last.deter.dims(), [b, 8]);
            assert_eq!(vec(x.obs.clone()), vec(y.obs.clone()), "{latent:?}");
            assert_eq!(vec(x.stoch.clone()), vec(y.stoch), "{latent:?}");
            assert_eq!(vec(x.reward.clone()), vec(y.reward), "{latent:?}");
            assert_ne!(
                vec(x.stoch),
                vec(z.stoch),
                "{latent:?}: another seed, another rollout"
            );
            let cont = vec(x.continue_prob);
            assert!(cont.iter().all(|p| (0.0..=1.0).contains(p)), "{cont:?}");
            // The mode rollout needs no seed.
            let m1 = model.imagine(start.clone(), actions.clone(), false);
            let m2 = model.imagine(start.clone(), actions.clone(), false);
            assert_eq!(vec(m1.deter), vec(m2.deter));
        }
    }

    #[test]
    fn img_step_and_decode_reward_cont_match_the_batched_imagine() {
        for latent in [small_gauss(), small_cat()] {
            let (_guard, device) = seeded(5);
            let model = tiny(latent.clone()).init(&continuous_spec(), &device);
            let (b, h) = (3, 4);
            let actions = Tensor::<3>::random([b, h, 1], Distribution::Uniform(-2.0, 2.0), &device);
            let start = RssmState {
                deter: Tensor::random([b, 8], Distribution::Normal(0.0, 1.0), &device),
                stoch: model.initial(b, &device).stoch,
            };
            for sample in [false, true] {
                device.seed(31);
                let batched = model.imagine(start.clone(), actions.clone(), sample);
                device.seed(31);
                let mut state = start.clone();
                for t in 0..h {
                    state = model.img_step(
                        &state,
                        actions.clone().narrow(1, t, 1).reshape([b, 1]),
                        sample,
                    );
                    let (reward, cont) =
                        model.decode_reward_cont(state.deter.clone(), state.stoch.clone());
                    let decoded = model.decode(state.deter.clone(), state.stoch.clone());
                    let at = |x: Tensor<2>| vec(x.narrow(1, t, 1).reshape([b]));
                    for (got, want, what) in [
                        (vec(reward.clone()), at(batched.reward.clone()), "reward"),
                        (vec(cont.clone()), at(batched.continue_prob.clone()), "cont"),
                        (vec(reward), vec(decoded.reward), "decode reward"),
                        (vec(cont), vec(decoded.continue_prob), "decode cont"),
                    ] {
                        assert!(
                            got.iter()
                                .zip(&want)
                                .all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0)),
                            "{latent:?} sample {sample} step {t} {what}: {got:?} vs {want:?}"
                        );
                    }
                }
                assert_eq!(
                    vec(state.stoch),
                    vec(batched.last.stoch),
                    "{latent:?} sample {sample}: same noise in the same order"
                );
            }
        }
    }

    #[test]
    fn symlog_and_symexp_are_inverse_and_symlog_compresses() {
        let device = wm_backend::test_device();
        let x = Tensor::<1>::from_floats([-1000.0, -3.0, -0.5, 0.0, 0.25, 7.0, 500.0], &device);
        let s = vec(symlog(x.clone()));
        assert!(
            (s[5] - 8f32.ln()).abs() < 1e-6 && s[3] == 0.0 && (s[2] + 1.5f32.ln()).abs() < 1e-6,
            "{s:?}"
        );
        let back = vec(symexp(symlog(x.clone())));
        for (a, b) in vec(x).iter().zip(&back) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn actions_are_one_hot_or_rescaled_to_the_unit_box() {
        let device = wm_backend::test_device();
        let enc = encode_action(
            &ActionSpec::Discrete { n: 3 },
            Tensor::<2>::from_floats([[2.0], [0.0]], &device),
        );
        assert_eq!(vec(enc), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        let enc = encode_action(
            &ActionSpec::Continuous {
                low: vec![-2.0, 0.0],
                high: vec![2.0, 10.0],
            },
            Tensor::<2>::from_floats([[-2.0, 10.0], [1.0, 2.5]], &device),
        );
        assert_eq!(vec(enc), vec![-1.0, 1.0, 0.5, -0.5]);
    }

    #[test]
    fn loss_has_the_named_terms_and_the_weighted_total() {
        let (_guard, device) = seeded(6);
        let spec = continuous_spec();
        let config = RssmConfig {
            recon_weight: 2.0,
            ..tiny(small_cat())
        };
        let model = config.init(&spec, &device);
        let loss = model.loss(&random_batch(&spec, 2, 4, &[(1, 2)], &device));
        let names: Vec<&str> = loss.terms.keys().map(String::as_str).collect();
        assert_eq!(names, ["cont", "dyn", "recon", "rep", "reward"]);
        assert_eq!(loss.weights["dyn"], 0.5);
        assert_eq!(loss.weights["rep"], 0.1);
        assert_eq!(loss.weights["recon"], 2.0);
        let total: f64 = loss
            .terms
            .iter()
            .map(|(k, t)| loss.weights[k] * t.clone().into_scalar::<f32>() as f64)
            .sum();
        let got = loss.total.into_scalar::<f32>() as f64;
        assert!(
            (total - got).abs() < 1e-4 * got.abs().max(1.0),
            "{total} vs {got}"
        );
        for key in ["kl", "post_spread", "prior_spread", "recon_mse"] {
            assert!(loss.metrics[key].is_finite(), "{:?}", loss.metrics);
        }
    }

    /// `x' = 0.9 x + 0.3 a`, observations `[x, -x, 0.5 x]`, reward `-x^2`: the reconstruction
    /// loss of a small RSSM falls by a clear factor within a few hundred Adam steps.
    #[test]
    fn training_reduces_the_reconstruction_loss_on_a_linear_system() {
        let (_guard, device) = seeded(8);
        let device = device.autodiff();
        let spec = continuous_spec();
        let config = RssmConfig {
            deter: 32,
            hidden: 32,
            latent: LatentConfig::Gaussian {
                size: 4,
                min_std: 0.1,
            },
            encoder_hidden: vec![32],
            decoder_hidden: vec![32],
            head_hidden: vec![32],
            ..RssmConfig::default()
        };
        let mut model = config.init(&spec, &device);
        let mut optim = AdamConfig::new().init();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (b, t) = (16, 20);
        let batch = |rng: &mut ChaCha8Rng| {
            let (mut obs, mut act, mut rew) = (vec![], vec![], vec![]);
            for _ in 0..b {
                let mut x: f32 = rng.random_range(-2.0..2.0);
                for step in 0..t {
                    let a: f32 = if step == 0 {
                        0.0
                    } else {
                        rng.random_range(-2.0..2.0)
                    };
                    if step > 0 {
                        x = 0.9 * x + 0.3 * a;
                    }
                    obs.extend([x, -x, 0.5 * x]);
                    act.push(a);
                    rew.push(-x * x);
                }
            }
            let first: Vec<f32> = (0..b * t)
                .map(|i| if i % t == 0 { 1.0 } else { 0.0 })
                .collect();
            SequenceTensors::from_host(
                &obs,
                &act,
                &rew,
                &first,
                &vec![0.0; b * t],
                b,
                t,
                3,
                1,
                &device,
            )
        };
        let mut recon = Vec::new();
        for _ in 0..300 {
            let (next, loss) = update_step(model, &mut optim, &batch(&mut rng), 3e-3, 100.0);
            model = next;
            recon.push(loss.terms["recon"].clone().into_scalar::<f32>());
        }
        let first: f32 = recon[..10].iter().sum::<f32>() / 10.0;
        let last: f32 = recon[recon.len() - 10..].iter().sum::<f32>() / 10.0;
        assert!(last < first / 5.0, "recon {first} -> {last}");
    }

    /// Observations `o_t = c + sigma * eps_t` with white noise of a known std per dimension
    /// (`sigma = [0.3, 2.0]`, raw units, no symlog): the decoder's learned std converges to
    /// `sigma` for both learned noise models (the unit std could not). The KL weights are 5 each
    /// and free nats 0 so that the noise stays out of `z`: with a proper ELBO (weights summing
    /// to 1) a posterior that copies `o_t` into `z` scores the same as one that ignores it, and
    /// the decoder's std then measures the posterior's width instead (measured: 0.035 and 0.11).
    #[test]
    fn learned_decoder_std_converges_to_the_known_observation_noise() {
        let sigma = [0.3f32, 2.0];
        let centre = [1.0f32, -0.5];
        let noises = [
            ObsNoise::Learned {
                min_log_std: -5.0,
                max_log_std: 2.0,
            },
            ObsNoise::Predicted {
                min_log_std: -5.0,
                max_log_std: 2.0,
            },
        ];
        for noise in noises {
            let (_guard, plain) = seeded(11);
            let device = plain.clone().autodiff();
            let spec = ModelSpec {
                obs_dim: 2,
                action: ActionSpec::Continuous {
                    low: vec![-1.0],
                    high: vec![1.0],
                },
            };
            let config = RssmConfig {
                deter: 16,
                hidden: 16,
                latent: LatentConfig::Gaussian {
                    size: 2,
                    min_std: 0.1,
                },
                encoder_hidden: vec![16],
                decoder_hidden: vec![16],
                head_hidden: vec![8],
                symlog: false,
                free_nats: 0.0,
                dyn_weight: 5.0,
                rep_weight: 5.0,
                obs_noise: noise,
                ..RssmConfig::default()
            };
            let mut model = config.init(&spec, &device);
            let mut optim = AdamConfig::new().init();
            let mut rng = ChaCha8Rng::seed_from_u64(12);
            let (b, t) = (16, 10);
            let batch = |rng: &mut ChaCha8Rng| {
                let obs: Vec<f32> = (0..b * t * 2)
                    .map(|i| {
                        // Box-Muller: a standard normal from two uniforms.
                        let (u1, u2): (f32, f32) =
                            (rng.random_range(1e-7..1.0), rng.random_range(0.0..1.0));
                        let eps = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                        centre[i % 2] + sigma[i % 2] * eps
                    })
                    .collect();
                let act: Vec<f32> = (0..b * t).map(|_| rng.random_range(-1.0..1.0)).collect();
                let first: Vec<f32> = (0..b * t)
                    .map(|i| if i % t == 0 { 1.0 } else { 0.0 })
                    .collect();
                SequenceTensors::from_host(
                    &obs,
                    &act,
                    &vec![0.0; b * t],
                    &first,
                    &vec![0.0; b * t],
                    b,
                    t,
                    2,
                    1,
                    &device,
                )
            };
            for _ in 0..600 {
                let (next, _) = update_step(model, &mut optim, &batch(&mut rng), 1e-2, 100.0);
                model = next;
            }
            let model = model.valid();
            let check = batch(&mut rng).to_device(&plain);
            let seen = model.observe(check.obs, check.action, check.is_first, None, true);
            let feat = Tensor::cat(
                vec![
                    seen.deter.reshape([b * t, 16]),
                    seen.stoch.reshape([b * t, 2]),
                ],
                1,
            );
            let (_, log_std) = model.obs_dist(feat);
            let std = vec(log_std.expect("a learned std").exp().mean_dim(0));
            for d in 0..2 {
                assert!(
                    (std[d] / sigma[d] - 1.0).abs() < 0.15,
                    "{noise:?}: learned std {std:?} against the true noise {sigma:?}"
                );
            }
        }
    }

    /// The posterior-head gradient of the whole loss, with the posterior noise drawn.
    fn posterior_head_gradient(model: &Rssm, batch: &SequenceTensors) -> Vec<f32> {
        let loss = model.loss(batch);
        let grads = GradientsParams::from_grads(loss.total.backward(), model);
        vec(grads
            .get::<2>(model.post_stats.weight.id)
            .expect("posterior head gradient"))
    }

    /// The exact gradient of `E_q[loss]` for sequences of `t` steps of one categorical of `k`
    /// classes: the `k^t` latent paths are forced through Gumbel noise of `1e3` on the chosen
    /// class, and `sum_c q(c) F_c` is differentiated as `sum_c q(c) sg(F_c) + sg(q(c)) F_c`
    /// (`F_c` the loss without the `reinforce` term, tracked pathwise; `q(c) = prod_t q(z_t)`).
    fn exact_posterior_head_gradient(model: &Rssm, batch: &SequenceTensors, k: usize) -> Vec<f32> {
        let (b, t) = batch.dims();
        let device = batch.obs.device();
        let mut objective = Tensor::<1>::zeros([1], &device);
        for path in 0..k.pow(t as u32) {
            let mut noise = vec![0.0f32; t * b * k];
            for step in 0..t {
                let class = (path / k.pow(step as u32)) % k;
                for row in 0..b {
                    noise[(step * b + row) * k + class] = 1e3;
                }
            }
            let noise = Tensor::<2>::from_data(TensorData::new(noise, [t * b, k]), &device);
            let (loss, log_q) = model.loss_with_noise(batch, Some(noise));
            let f = loss
                .terms
                .iter()
                .filter(|(name, _)| name.as_str() != "reinforce")
                .map(|(name, term)| term.clone().mul_scalar(loss.weights[name]))
                .reduce(|x, y| x + y)
                .expect("terms");
            // Every row is the same sequence: ln q(c) is the per-row sum over steps.
            let q = log_q
                .expect("categorical log q")
                .sum()
                .div_scalar(b as f64)
                .exp();
            objective = objective + q.clone() * f.clone().detach() + q.detach() * f;
        }
        let grads = GradientsParams::from_grads(objective.backward(), model);
        vec(grads
            .get::<2>(model.post_stats.weight.id)
            .expect("posterior head gradient"))
    }

    /// REINFORCE through the recurrence (the return of `z_t` covers the later steps' terms)
    /// is unbiased against exact enumeration of the 9 latent paths of a 2-step sequence with
    /// one 3-class categorical, whichever baseline; the moving-average baseline at least
    /// halves the variance; straight-through, biased, fails the same check (so it has power).
    /// Tolerance: 4.5 standard errors of the mean of 32 gradients (each over 400 rows) on the
    /// 24 coordinates of the posterior head. (`z_1`'s weight into the cell is scaled up so that
    /// its effect on step 2 matters: a return that leaves out the later steps' terms was 17
    /// standard errors off with the moving-average baseline when tried.)
    #[test]
    fn reinforce_through_the_recurrence_is_unbiased_against_enumeration() {
        let (_guard, device) = seeded(41);
        let device = device.autodiff();
        let spec = continuous_spec();
        let k = 3;
        let config = |estimator| RssmConfig {
            free_nats: 0.0,
            ..tiny(LatentConfig::Categorical {
                groups: 1,
                classes: k,
                unimix: 0.0,
                estimator,
            })
        };
        let one = random_batch(&spec, 1, 2, &[], &device);
        let rows = 400;
        let batch = SequenceTensors {
            obs: one.obs.repeat_dim(0, rows),
            action: one.action.repeat_dim(0, rows),
            reward: one.reward.repeat_dim(0, rows),
            is_first: one.is_first.repeat_dim(0, rows),
            is_terminal: one.is_terminal.repeat_dim(0, rows),
        };
        let reinforce = |baseline| CategoricalEstimator::Reinforce { baseline };
        let mut reference = config(reinforce(ReinforceBaseline::None)).init(&spec, &device);
        // A strong effect of `z_1` on `h_2`, so that a return without the later steps' terms
        // is visibly biased.
        reference.img_in_stoch.weight = reference.img_in_stoch.weight.map(|w| w.mul_scalar(10.0));
        let record = reference.clone().into_record();
        let exact = exact_posterior_head_gradient(&reference, &batch, k);
        let scale = exact.iter().map(|g| g.abs()).fold(0.0f32, f32::max);
        assert!(scale > 1e-4, "exact gradient {exact:?}");
        let rounds = 32;
        let check = |estimator: CategoricalEstimator| {
            let model = config(estimator.clone())
                .init(&spec, &device)
                .load_record(record.clone());
            let draws: Vec<Vec<f32>> = (0..rounds)
                .map(|_| posterior_head_gradient(&model, &batch))
                .collect();
            let (mut worst, mut variance) = (0.0f64, 0.0f64);
            for (i, exact_i) in exact.iter().enumerate() {
                let values: Vec<f64> = draws.iter().map(|d| d[i] as f64).collect();
                let mean = values.iter().sum::<f64>() / rounds as f64;
                let var =
                    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (rounds - 1) as f64;
                variance += var / exact.len() as f64;
                let se = (var / rounds as f64).sqrt().max(1e-6 * scale as f64);
                worst = worst.max((mean - *exact_i as f64).abs() / se);
            }
            eprintln!(
                "{estimator:?}: worst |bias| / s.e. {worst:.2}, mean variance {variance:.3e} \
                 (largest exact coordinate {scale:.3e})"
            );
            (worst, variance)
        };
        let (none_z, none_var) = check(reinforce(ReinforceBaseline::None));
        let (ma_z, ma_var) = check(reinforce(ReinforceBaseline::MovingAverage { decay: 0.5 }));
        assert!(
            none_z < 4.5,
            "REINFORCE: a coordinate is {none_z} standard errors off"
        );
        assert!(
            ma_z < 4.5,
            "REINFORCE (moving average): a coordinate is {ma_z} standard errors off"
        );
        assert!(
            ma_var < 0.5 * none_var,
            "moving-average baseline variance {ma_var} vs none {none_var}"
        );
        let (st_z, _) = check(CategoricalEstimator::StraightThrough);
        assert!(st_z > 4.5, "straight-through passed the bias check: {st_z}");
    }

    /// The RSSM takes REINFORCE with no or a moving-average baseline and refuses the cVAE's
    /// learned and leave-one-out baselines by field; imagined (prior) samples stay pathwise.
    #[test]
    fn reinforce_baselines_the_rssm_cannot_use_are_invalid_fields() {
        let with = |baseline| LatentConfig::Categorical {
            groups: 2,
            classes: 3,
            unimix: 0.01,
            estimator: CategoricalEstimator::Reinforce { baseline },
        };
        assert!(with(ReinforceBaseline::None).validate().is_ok());
        assert!(
            with(ReinforceBaseline::MovingAverage { decay: 0.9 })
                .validate()
                .is_ok()
        );
        for baseline in [
            ReinforceBaseline::Learned { hidden: 8 },
            ReinforceBaseline::LeaveOneOut { samples: 4 },
        ] {
            let err = with(baseline).validate().expect_err("refused");
            assert!(err.to_string().contains("estimator.baseline"), "{err}");
        }
        let latent = with(ReinforceBaseline::None);
        let LatentConfig::Categorical { estimator, .. } = latent.pathwise().into_owned() else {
            unreachable!()
        };
        assert_eq!(estimator, CategoricalEstimator::StraightThrough);
    }
}
