#![warn(missing_docs)]
//! A Dreamer-style recurrent state-space model (RSSM; PlaNet, DreamerV1-3) on burn.
//!
//! # The model
//! For each step `t` of a sequence (replay alignment: `a_t` is the action that led to `o_t`):
//!
//! | part | equation | network |
//! |------|----------|---------|
//! | reset | where `is_first_t`: `h_{t-1}, z_{t-1} <- 0`, `a_t <- 0` | |
//! | recurrence | `h_t = GRU(h_{t-1}, SiLU(W_z z_{t-1} + W_a a_t + b))` | one fused gate matmul `[x, h] -> 3D` |
//! | prior | `p(z_t | h_t)` | `h -> hidden -> stats` |
//! | encoder | `e_t = enc(symlog(o_t))` | MLP, SiLU after every layer |
//! | posterior | `q(z_t | h_t, e_t)` | `[h, e] -> hidden -> stats` |
//! | decoder | `o_t ~ N(dec(h_t, z_t), diag(std^2))` in symlog space | MLP `[h, z] -> O` (`2 O` with a predicted std) |
//! | reward | `symlog r_t ~ N(rew(h_t, z_t), 1)` | MLP `[h, z] -> 1` |
//! | continue | `1 - is_terminal_t ~ Bernoulli(sigmoid(cont(h_t, z_t)))` | MLP `[h, z] -> 1` |
//!
//! Held-out likelihood ([`likelihood`]): an importance-weighted bound on `ln p(o_{0:T} | a)` and
//! the filtering predictive `ln p(o_t | o_{<t}, a)` with `K` particles (a particle filter that
//! resamples when the effective sample size falls under `K / 2`), in raw observation units.
//!
//! The latent ([`LatentConfig`]) is a diagonal Gaussian (`std = softplus(raw) + min_std`,
//! reparameterised samples) or `G` categoricals of `K` classes with a uniform mix and
//! one-hot samples whose gradient is [`CategoricalEstimator`]'s (straight-through by default,
//! Gumbel-softmax, straight-through Gumbel).
//!
//! # Design choices
//! - **Initial state**: zeros for `h` and `z` (PlaNet/DreamerV1-V2), not DreamerV3's learned
//!   `h_0`: an `is_first` reset is then a multiplication by `1 - is_first`, and steps without any
//!   episode start in the batch skip it (the mask is read back once per sequence).
//! - **Decoder**: a Gaussian on symlog targets whose std is [`ObsNoise`]: `Unit` (default) is
//!   DreamerV3's symlog MSE `0.5 ||dec - symlog(o)||^2` (the NLL without its constant);
//!   `Learned` (one log-std per dimension) and `Predicted` (a log-std per dimension from
//!   `(h, z)`, PlaNet/DreamerV1-style learned variance) are soft-bounded like the one-step
//!   models' Gaussian heads, and the loss is the full Gaussian NLL without its constant. The
//!   held-out likelihood uses the same density. The reward is unit-variance in symlog space.
//!   With `symlog: false` the targets are raw.
//! - **KL balancing** (DreamerV3): `dyn = max(free, KL(sg(q) || p))`, `rep = max(free,
//!   KL(q || sg(p)))` with weights 0.5 and 0.1. **Free bits** act per `(b, t)` on the KL summed
//!   over the latent dimensions (and groups), clipped below by `free_nats` (default 1 nat), so
//!   a step whose KL is under the threshold contributes no gradient.
//! - **Which parameters each KL term reaches**: within a step, `dyn` reaches the prior head and,
//!   through `h_t`, the GRU and the cell input layer, never the posterior head or the encoder
//!   through the posterior's distribution (it is stopped); `rep` reaches the posterior head, the
//!   encoder and (through `h_t`, an input of the posterior) the GRU and cell input layer, never
//!   the prior head. Over several steps `h_t` also depends on the sampled `z_{t-1}` of the
//!   posterior, so `dyn` reaches the encoder and posterior head through the recurrence, as in
//!   DreamerV3 (the sample is not stopped).
//! - **Speed** (the CPU backend is bound by per-operation overhead): the encoder, the embedding
//!   and action parts of the first posterior and cell layers, the prior, the decoder and the
//!   heads run once over all `B * T` rows; only the recurrence and the posterior run per step
//!   (~30 autodiff operations per step for the Gaussian latent). Internally rows are
//!   time-major (`t * B + b`).
//!
//! # Use
//! ```no_run
//! use wm_rssm::*;
//! use burn::optim::AdamConfig;
//! use burn::tensor::Device;
//! # fn batch() -> SequenceTensors { unimplemented!() }
//! let device = Device::flex().autodiff();
//! let spec = wm_rssm::ModelSpec { obs_dim: 3, action: wm_models::ActionSpec::Continuous { low: vec![-2.0], high: vec![2.0] } };
//! let mut model = RssmConfig::default().init(&spec, &device);
//! let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
//! for _ in 0..100 {
//!     let (next, loss) = update_step(model, &mut optim, &batch(), 3e-4, 100.0);
//!     model = next;
//!     println!("{:?}", loss.metrics);
//! }
//! ```

mod config;
pub mod estimators;
pub mod latent;
pub mod likelihood;
mod model;
mod train;

pub use config::{ObsNoise, RssmConfig, SequenceTensors};
pub use latent::{CategoricalEstimator, LatentConfig, LatentDist};
pub use likelihood::{
    FilterStats, SequenceLikelihood, StateSpaceModel, particle_filter, sequence_likelihood,
};
pub use model::{
    Decoded, ImaginedSequence, Observed, Rssm, RssmState, encode_action, symexp, symlog,
};
pub use train::{clip_global_norm, global_grad_norm, module_grad_norms, update_step};
/// What the RSSM needs to know about the environment: the one spec every model shares.
pub use wm_models::ModelSpec;
#[cfg(test)]
mod test_util;
