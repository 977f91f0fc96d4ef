//! Hyper-parameters, the environment spec and the sequence batch.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use wm_models::validate::{self, InvalidField};

use crate::latent::LatentConfig;

/// Hyper-parameters of the [`Rssm`](crate::Rssm); every field has a serde default (RON:
/// `(deter: 200, latent: Categorical(groups: 32, classes: 32))`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RssmConfig {
    /// Width `D` of the deterministic (GRU) state. Default 200.
    pub deter: usize,
    /// Width of the hidden layers inside the recurrent cell: the input layer
    /// `[z, a] -> hidden`, the prior `h -> hidden -> stats` and the posterior
    /// `[h, e] -> hidden -> stats`. Default 200.
    pub hidden: usize,
    /// The stochastic latent. Default `Gaussian(size: 30, min_std: 0.1)`.
    pub latent: LatentConfig,
    /// Hidden widths of the observation encoder; the embedding `e` is the last layer's
    /// (SiLU-activated) output, so it must not be empty. Default `[200, 200]`.
    pub encoder_hidden: Vec<usize>,
    /// Hidden widths of the observation decoder `[h, z] -> O`. Default `[200, 200]`.
    pub decoder_hidden: Vec<usize>,
    /// Hidden widths of the reward and continue heads `[h, z] -> 1`. Default `[200, 200]`.
    pub head_hidden: Vec<usize>,
    /// Symlog-transform the observations fed to the encoder and the reconstruction and reward
    /// targets (DreamerV3). Default `true`.
    pub symlog: bool,
    /// Free nats: each KL term is `max(free_nats, KL)` per step, KL summed over the latent
    /// dimensions. Default 1.0.
    pub free_nats: f64,
    /// Weight of `dyn` = `KL(sg(post) || prior)`. Default 0.5.
    pub dyn_weight: f64,
    /// Weight of `rep` = `KL(post || sg(prior))`. Default 0.1.
    pub rep_weight: f64,
    /// Weight of `recon`. Default 1.
    pub recon_weight: f64,
    /// Weight of `reward`. Default 1.
    pub reward_weight: f64,
    /// Weight of `cont`. Default 1.
    pub cont_weight: f64,
    /// LayerNorm inside the recurrent cell (DreamerV3): before the SiLU of the input layer,
    /// of the prior and of the posterior hidden layers, and on the GRU's fused gate
    /// pre-activations. Without it the hidden activations that feed the 32x32 categorical
    /// logits stay small, the logits near zero and the latent near uniform (3.4 of
    /// ln 32 = 3.47 nats per group after 150 updates on Pendulum: z is mostly noise).
    /// Default `false` (the Gaussian configs were measured without it).
    pub norm: bool,
    /// The observation decoder's noise model: the standard deviation of `p(o_t | h_t, z_t)` (in
    /// symlog space with `symlog`), used by the `recon` loss and by the held-out likelihood.
    /// Default [`ObsNoise::Unit`] (DreamerV3's symlog MSE).
    pub obs_noise: ObsNoise,
}

/// The standard deviation of the RSSM's observation decoder `p(o_t | h_t, z_t) = N(mean, std^2)`
/// (diagonal; symlog space with `symlog`). RON: `Unit`,
/// `Learned(min_log_std: -5.0, max_log_std: 2.0)`, `Predicted(min_log_std: -5.0, max_log_std: 2.0)`.
///
/// The learned variants bound the log-std softly with
/// [`wm_models::dist::soft_bound_log_std`] (the bounds of the one-step models' Gaussian heads);
/// a raw value of 0 is a unit std, so both start where `Unit` is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum ObsNoise {
    /// `std = 1` (DreamerV3, DreamerV1/PlaNet): the `recon` loss is `0.5 ||dec - o||^2`, and the
    /// density is flat wherever the decoder is sure (the held-out NLL is dominated by the noise
    /// model, not by the prediction).
    #[default]
    Unit,
    /// One learned log-std per observation dimension, shared by every state (a parameter
    /// `[O]`, soft-bounded).
    Learned {
        /// Lower soft bound of the log-std. Default -5.
        #[serde(default = "default_min_log_std")]
        min_log_std: f64,
        /// Upper soft bound of the log-std. Default 2.
        #[serde(default = "default_max_log_std")]
        max_log_std: f64,
    },
    /// A log-std per dimension predicted from `(h_t, z_t)` by the decoder (its output doubles to
    /// `[mean | raw log-std]`), soft-bounded: heteroscedastic.
    Predicted {
        /// Lower soft bound of the log-std. Default -5.
        #[serde(default = "default_min_log_std")]
        min_log_std: f64,
        /// Upper soft bound of the log-std. Default 2.
        #[serde(default = "default_max_log_std")]
        max_log_std: f64,
    },
}

fn default_min_log_std() -> f64 {
    -5.0
}

fn default_max_log_std() -> f64 {
    2.0
}

impl ObsNoise {
    /// The soft log-std bounds, `None` for [`ObsNoise::Unit`].
    pub fn bounds(&self) -> Option<(f64, f64)> {
        match *self {
            Self::Unit => None,
            Self::Learned {
                min_log_std,
                max_log_std,
            }
            | Self::Predicted {
                min_log_std,
                max_log_std,
            } => Some((min_log_std, max_log_std)),
        }
    }

    /// The first field out of range: both bounds finite in `[-20, 20]`, `min < max`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        match self.bounds() {
            None => Ok(()),
            Some((min, max)) => validate::log_std_bounds("min_log_std", min, max),
        }
    }
}

impl Default for RssmConfig {
    fn default() -> Self {
        Self {
            deter: 200,
            hidden: 200,
            latent: LatentConfig::default(),
            encoder_hidden: vec![200, 200],
            decoder_hidden: vec![200, 200],
            head_hidden: vec![200, 200],
            symlog: true,
            free_nats: 1.0,
            dyn_weight: 0.5,
            rep_weight: 0.1,
            recon_weight: 1.0,
            reward_weight: 1.0,
            cont_weight: 1.0,
            norm: false,
            obs_noise: ObsNoise::Unit,
        }
    }
}

impl RssmConfig {
    /// The first field out of range (its path relative to this config): widths in
    /// `1..=MAX_WIDTH` (the encoder needs at least one layer), free nats and weights finite in
    /// `[0, 1e6]`, and the latent's own checks.
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate::count("deter", self.deter, validate::MAX_WIDTH)?;
        validate::count("hidden", self.hidden, validate::MAX_WIDTH)?;
        if self.encoder_hidden.is_empty() {
            return Err(InvalidField::new(
                "encoder_hidden",
                "must name at least one layer (the embedding), got []",
            ));
        }
        validate::widths("encoder_hidden", &self.encoder_hidden)?;
        validate::widths("decoder_hidden", &self.decoder_hidden)?;
        validate::widths("head_hidden", &self.head_hidden)?;
        for (field, value) in [
            ("free_nats", self.free_nats),
            ("dyn_weight", self.dyn_weight),
            ("rep_weight", self.rep_weight),
            ("recon_weight", self.recon_weight),
            ("reward_weight", self.reward_weight),
            ("cont_weight", self.cont_weight),
        ] {
            validate::within(field, value, 0.0, 1e6)?;
        }
        self.obs_noise
            .validate()
            .map_err(|invalid| invalid.within("obs_noise"))?;
        self.latent
            .validate()
            .map_err(|invalid| invalid.within("latent"))
    }
}

/// A batch of sequences on a device, batch-major, raw units, aligned like
/// `wm_replay::SequenceBatch`: `action[b, t]` is the action that led to `obs[b, t]` (zeros
/// where `is_first`), `reward[b, t]` the reward received on arriving at `obs[b, t]`.
#[derive(Clone, Debug)]
pub struct SequenceTensors {
    /// `[B, T, O]`.
    pub obs: Tensor<3>,
    /// `[B, T, raw action width]` (the index as `f32` for discrete actions).
    pub action: Tensor<3>,
    /// `[B, T]`.
    pub reward: Tensor<2>,
    /// `[B, T]`, 1.0 at the first observation of an episode.
    pub is_first: Tensor<2>,
    /// `[B, T]`, 1.0 at the last observation of a terminated (not truncated) episode.
    pub is_terminal: Tensor<2>,
}

impl SequenceTensors {
    /// Builds the tensors from flat row-major `[batch][time][feature]` host slices, exactly the
    /// layout of `wm_replay::SequenceBatch`.
    ///
    /// # Shapes
    /// - `obs`: `[batch * seq_len * obs_dim]`, `action`: `[batch * seq_len * action_width]`
    /// - `reward`, `is_first`, `is_terminal`: `[batch * seq_len]`
    ///
    /// # Panics
    /// If a slice length disagrees with the sizes.
    #[allow(clippy::too_many_arguments)]
    pub fn from_host(
        obs: &[f32],
        action: &[f32],
        reward: &[f32],
        is_first: &[f32],
        is_terminal: &[f32],
        batch: usize,
        seq_len: usize,
        obs_dim: usize,
        action_width: usize,
        device: &Device,
    ) -> Self {
        let n = batch * seq_len;
        for (name, len, want) in [
            ("obs", obs.len(), n * obs_dim),
            ("action", action.len(), n * action_width),
            ("reward", reward.len(), n),
            ("is_first", is_first.len(), n),
            ("is_terminal", is_terminal.len(), n),
        ] {
            assert_eq!(
                len, want,
                "SequenceTensors::from_host: {name} has {len} values, expected {want} (batch {batch}, seq_len {seq_len}, obs_dim {obs_dim}, action_width {action_width})"
            );
        }
        let t3 = |v: &[f32], w: usize| {
            Tensor::<3>::from_data(TensorData::new(v.to_vec(), [batch, seq_len, w]), device)
        };
        let t2 = |v: &[f32]| {
            Tensor::<2>::from_data(TensorData::new(v.to_vec(), [batch, seq_len]), device)
        };
        Self {
            obs: t3(obs, obs_dim),
            action: t3(action, action_width),
            reward: t2(reward),
            is_first: t2(is_first),
            is_terminal: t2(is_terminal),
        }
    }

    /// `(B, T)`.
    pub fn dims(&self) -> (usize, usize) {
        let [b, t, _] = self.obs.dims();
        (b, t)
    }

    /// The batch on `device`.
    pub fn to_device(&self, device: &Device) -> Self {
        Self {
            obs: self.obs.clone().to_device(device),
            action: self.action.clone().to_device(device),
            reward: self.reward.clone().to_device(device),
            is_first: self.is_first.clone().to_device(device),
            is_terminal: self.is_terminal.clone().to_device(device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_fill_missing_fields_and_unknown_fields_are_rejected() {
        let c: RssmConfig = ron::from_str("(deter: 64, latent: Categorical(groups: 4))").unwrap();
        assert_eq!(c.deter, 64);
        assert_eq!(c.hidden, 200);
        assert_eq!(
            c.latent,
            LatentConfig::Categorical {
                groups: 4,
                classes: 32,
                unimix: 0.01,
                estimator: Default::default()
            }
        );
        assert_eq!((c.dyn_weight, c.rep_weight, c.free_nats), (0.5, 0.1, 1.0));
        assert!(ron::from_str::<RssmConfig>("(deterr: 3)").is_err());
        let d: RssmConfig = ron::from_str("()").unwrap();
        assert_eq!(d, RssmConfig::default());
        assert_eq!(d.latent.stoch_width(), 30);
        assert_eq!(d.obs_noise, ObsNoise::Unit);
    }

    #[test]
    fn obs_noise_parses_with_default_bounds_and_bad_bounds_name_the_field() {
        let c: RssmConfig = ron::from_str("(obs_noise: Learned())").unwrap();
        assert_eq!(
            c.obs_noise,
            ObsNoise::Learned {
                min_log_std: -5.0,
                max_log_std: 2.0
            }
        );
        let c: RssmConfig =
            ron::from_str("(obs_noise: Predicted(min_log_std: -3.0, max_log_std: 1.0))").unwrap();
        assert_eq!(c.obs_noise.bounds(), Some((-3.0, 1.0)));
        c.validate().unwrap();
        for (noise, field) in [
            (
                "Learned(min_log_std: 1.0, max_log_std: 1.0)",
                "obs_noise.max_log_std",
            ),
            ("Predicted(min_log_std: -30.0)", "obs_noise.min_log_std"),
            ("Learned(max_log_std: 1e9)", "obs_noise.max_log_std"),
        ] {
            let c: RssmConfig = ron::from_str(&format!("(obs_noise: {noise})")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{noise}: {err}");
        }
    }

    #[test]
    fn from_host_keeps_the_replay_layout() {
        let device = wm_backend::test_device();
        let (b, t) = (2, 3);
        let obs: Vec<f32> = (0..b * t * 2).map(|i| i as f32).collect();
        let seq = SequenceTensors::from_host(
            &obs,
            &[0.0; 6],
            &[0.0; 6],
            &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            &[0.0; 6],
            b,
            t,
            2,
            1,
            &device,
        );
        // obs[b=1, t=2, :] = elements 10, 11.
        let last = seq
            .obs
            .clone()
            .slice([1..2, 2..3, 0..2])
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(last, vec![10.0, 11.0]);
        assert_eq!(seq.dims(), (2, 3));
    }
}
