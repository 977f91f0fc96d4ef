//! The RSSM module: networks, posterior rollout (`observe`), prior rollout (`imagine`), loss.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};
use wm_kernels::silu;
use wm_models::mlp::{Mlp, MlpConfig};
use wm_models::{ActionSpec, LossOutput};

use crate::config::{ObsNoise, RssmConfig, SequenceTensors};
use crate::latent::LatentDist;
use wm_models::ModelSpec;

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
            latent
                .noise(n, &device)
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
        let stoch = latent.sample(&prior, noise);
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
    pub fn loss(&self, batch: &SequenceTensors) -> LossOutput {
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
        );
        let tm1 = |x: Tensor<2>| x.swap_dims(0, 1).reshape([n]);
        let c = &self.config;
        let (obs_target, reward_target) = if c.symlog {
            (symlog(obs), symlog(tm1(batch.reward.clone())))
        } else {
            (obs, tm1(batch.reward.clone()))
        };
        let feat = Tensor::cat(vec![roll.deter, roll.stoch], 1);
        let (obs_mean, obs_log_std) = self.obs_dist(feat.clone());
        let obs_err = (obs_mean - obs_target).square();
        let recon_mse = obs_err.clone().detach().mean();
        let (recon, obs_std) = match obs_log_std {
            None => {
                let ones = Tensor::<1>::ones([1], &obs_err.device());
                (obs_err.sum_dim(1).mean().mul_scalar(0.5), ones)
            }
            Some(log_std) => (
                ((obs_err * log_std.clone().mul_scalar(-2.0).exp()).mul_scalar(0.5)
                    + log_std.clone())
                .sum_dim(1)
                .mean(),
                log_std.detach().exp().mean(),
            ),
        };
        let reward = (self.reward_head.forward(feat.clone()).reshape([n]) - reward_target)
            .square()
            .mean()
            .mul_scalar(0.5);
        let terminal = tm1(batch.is_terminal.clone());
        let cont_target = terminal.clone().neg().add_scalar(1.0);
        let cont_logit = self.cont_head.forward(feat).reshape([n]);
        let cont_prob = sigmoid(cont_logit.clone().detach());
        let cont = wm_models::dist::bce_with_logits(cont_logit, cont_target.clone()).mean();
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
        let dyn_term = kl_dyn.clamp_min(c.free_nats).mean();
        let rep_term = roll
            .post
            .kl(&roll.prior.detach())
            .clamp_min(c.free_nats)
            .mean();
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
        assemble_loss(
            vec![
                ("recon", recon, c.recon_weight),
                ("reward", reward, c.reward_weight),
                ("cont", cont, c.cont_weight),
                ("dyn", dyn_term, c.dyn_weight),
                ("rep", rep_term, c.rep_weight),
            ],
            metrics,
        )
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
            assert_eq!(
                vec(whole.stoch.clone().slice([0..1, boundary..t])),
                vec(second.stoch),
                "{latent:?}"
            );
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
}
