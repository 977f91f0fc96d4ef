//! The models the trainer can train, behind one burn `Module` enum, and their configs.

use burn::module::Module;
use serde::{Deserialize, Serialize};
use wm_models::{
    AnyTransitionModel, CvaeConfig, DeterministicMlpConfig, GaussianMlpConfig, ModelSpec, Normalizer, TransitionModelConfig,
};
use wm_rssm::{LatentConfig, Rssm, RssmConfig, RssmSpec};

/// A model config as written in `configs/*.ron`: `model: Cvae((..))`, `Gaussian((..))`,
/// `Deterministic((..))` or `Rssm((..))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelConfig {
    /// Conditional VAE of one transition.
    Cvae(CvaeConfig),
    /// Gaussian MLP (distribution baseline).
    Gaussian(GaussianMlpConfig),
    /// Deterministic MLP (expectation baseline).
    Deterministic(DeterministicMlpConfig),
    /// Recurrent state-space model, trained on sequences.
    Rssm(RssmConfig),
}

impl ModelConfig {
    /// The name used in run folders and reports: `cvae`, `gaussian_mlp`, `deterministic_mlp`,
    /// `rssm_gaussian` or `rssm_categorical`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rssm(config) => rssm_kind(&config.latent),
            other => other.transition().expect("non-RSSM configs are transition models").kind(),
        }
    }

    /// The one-step model's config, `None` for the RSSM.
    pub fn transition(&self) -> Option<TransitionModelConfig> {
        match self {
            Self::Cvae(c) => Some(TransitionModelConfig::Cvae(c.clone())),
            Self::Gaussian(c) => Some(TransitionModelConfig::Gaussian(c.clone())),
            Self::Deterministic(c) => Some(TransitionModelConfig::Deterministic(c.clone())),
            Self::Rssm(_) => None,
        }
    }

    /// Whether the model trains on sequences (the RSSM) rather than transitions.
    pub fn is_sequence_model(&self) -> bool {
        matches!(self, Self::Rssm(_))
    }

    /// Builds the model on `device`. The normaliser is used by the one-step models only (the RSSM
    /// squashes its inputs and targets with symlog instead).
    pub fn init(&self, spec: &ModelSpec, normalizer: Normalizer, device: &wm_backend::Device) -> AnyModel {
        match self {
            Self::Rssm(config) => AnyModel::Rssm(config.init(&RssmSpec { obs_dim: spec.obs_dim, action: spec.action.clone() }, device)),
            other => AnyModel::Transition(other.transition().expect("checked").init(spec, normalizer, device)),
        }
    }
}

fn rssm_kind(latent: &LatentConfig) -> &'static str {
    match latent {
        LatentConfig::Gaussian { .. } => "rssm_gaussian",
        LatentConfig::Categorical { .. } => "rssm_categorical",
    }
}

/// A model being trained or evaluated.
#[derive(Module, Debug)]
pub enum AnyModel {
    /// cVAE or one of the MLP baselines.
    Transition(AnyTransitionModel),
    /// The recurrent state-space model.
    Rssm(Rssm),
}

impl AnyModel {
    /// See [`ModelConfig::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transition(model) => model.kind(),
            Self::Rssm(model) => rssm_kind(&model.config().latent),
        }
    }

    /// The one-step model, if this is one.
    pub fn as_transition(&self) -> Option<&AnyTransitionModel> {
        match self {
            Self::Transition(model) => Some(model),
            Self::Rssm(_) => None,
        }
    }
}
