//! A run's weights as one [safetensors](https://huggingface.co/docs/safetensors) file
//! (`wm export`), written with burn-store: the world model under `model.`, the actor network
//! under `actor.` when the run trained one, and the normaliser's statistics under `normalizer.`
//! (one-step models), in PyTorch's layout (`Linear` weights `[out, in]`, burn's enum variant
//! names left out of the paths), so `torch.nn.Linear` takes them as they are. The header's
//! metadata says what the tensors are: `worldmodel_format`, `model_kind`, `env`, `obs_dim`,
//! `action_space`, `model_config` and `actor_config` (JSON). docs/export.md lists the tensor
//! names and shapes per model kind.
//!
//! [`reference_outputs`] computes, for seeded inputs, what the exported cVAE and actor predict,
//! so another implementation can check that it reads the file right
//! (scripts/bench/export_torch.py does, in PyTorch).

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde_json::{Value, json};
use wm_imagine::{Context, WorldModel};
use wm_models::{ActionSpec, AnyTransitionModel, Normalizer, TransitionModel};

use crate::config::{CollectPolicy, TrainConfig};
use crate::model::AnyModel;

/// The version of the file layout, in the metadata as `worldmodel_format`.
pub const EXPORT_FORMAT: &str = "1";

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// burn-store could not write or read the file.
    #[error("{operation} {path}: {message}")]
    Store {
        /// `writing` or `reading`.
        operation: &'static str,
        /// The file.
        path: String,
        /// What burn-store said.
        message: String,
    },
    /// The file's tensors do not fit the model they are loaded into.
    #[error("{path}: {message}")]
    Mismatch {
        /// The file.
        path: String,
        /// What does not fit.
        message: String,
    },
    /// Reference outputs exist only for some models.
    #[error("reference outputs are implemented for the cvae only, not for a {kind} model")]
    NoReference {
        /// The model kind.
        kind: String,
    },
}

/// The normaliser's statistics as tensors, so that they travel in the same file.
#[derive(Module, Debug)]
pub struct NormalizerTensors {
    /// `[O]`.
    pub obs_mean: Param<Tensor<1>>,
    /// `[O]`.
    pub obs_std: Param<Tensor<1>>,
    /// `[O]`, of `s' - s`.
    pub delta_mean: Param<Tensor<1>>,
    /// `[O]`, of `s' - s`.
    pub delta_std: Param<Tensor<1>>,
    /// `[1]`.
    pub reward_mean: Param<Tensor<1>>,
    /// `[1]`.
    pub reward_std: Param<Tensor<1>>,
}

impl NormalizerTensors {
    /// The statistics of `normalizer` on `device`.
    pub fn new(normalizer: &Normalizer, device: &Device) -> Self {
        let vector = |values: &[f32]| {
            Param::from_tensor(Tensor::<1>::from_data(
                TensorData::new(values.to_vec(), [values.len()]),
                device,
            ))
        };
        Self {
            obs_mean: vector(&normalizer.obs_mean),
            obs_std: vector(&normalizer.obs_std),
            delta_mean: vector(&normalizer.delta_mean),
            delta_std: vector(&normalizer.delta_std),
            reward_mean: vector(&[normalizer.reward_mean]),
            reward_std: vector(&[normalizer.reward_std]),
        }
    }

    /// Back to a [`Normalizer`].
    pub fn to_normalizer(&self) -> Normalizer {
        let values = |param: &Param<Tensor<1>>| -> Vec<f32> {
            param
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()
        };
        Normalizer {
            obs_mean: values(&self.obs_mean),
            obs_std: values(&self.obs_std),
            delta_mean: values(&self.delta_mean),
            delta_std: values(&self.delta_std),
            reward_mean: values(&self.reward_mean)
                .first()
                .copied()
                .unwrap_or(f32::NAN),
            reward_std: values(&self.reward_std)
                .first()
                .copied()
                .unwrap_or(f32::NAN),
        }
    }
}

/// Everything one file holds, as one module so that one burn-store call writes or reads it.
#[derive(Module, Debug)]
pub struct Exported {
    /// The world model.
    pub model: AnyModel,
    /// The actor network, when the run trained one.
    pub actor: Option<wm_agent::Actor>,
    /// The normaliser of a one-step model (the RSSM has none: it reads symlog observations).
    pub normalizer: Option<NormalizerTensors>,
}

impl Exported {
    /// The run's model and actor, with the model's normaliser.
    pub fn new(model: AnyModel, actor: Option<wm_agent::Actor>, device: &Device) -> Self {
        let normalizer = match &model {
            AnyModel::Transition(m) => Some(NormalizerTensors::new(m.normalizer(), device)),
            AnyModel::Rssm(_) => None,
        };
        Self {
            model,
            actor,
            normalizer,
        }
    }

    /// Tensor names and shapes, in the file's (PyTorch) layout, sorted by name.
    pub fn tensor_names(&self) -> Vec<(String, Vec<usize>)> {
        let mut names: Vec<(String, Vec<usize>)> = self
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
            .into_iter()
            .map(|snapshot| (snapshot.name.clone(), snapshot.shape.to_vec()))
            .collect();
        names.sort();
        names
    }

    /// Writes the file (atomically; an existing file is an error) with `metadata` in its header.
    ///
    /// # Errors
    /// [`ExportError::Store`] if burn-store cannot write it.
    pub fn save(&self, path: &Path, metadata: &[(String, String)]) -> Result<(), ExportError> {
        let mut store = SafetensorsStore::from_file(path)
            .with_to_adapter(BurnToPyTorchAdapter)
            .skip_enum_variants(true)
            .metadata("worldmodel_format", EXPORT_FORMAT);
        for (key, value) in metadata {
            store = store.metadata(key.clone(), value.clone());
        }
        self.save_into(&mut store)
            .map_err(|error| ExportError::Store {
                operation: "writing",
                path: path.display().to_string(),
                message: error.to_string(),
            })
    }

    /// Loads a file written by [`Exported::save`] into this module (whose shapes must match
    /// every tensor of the file, and the file must have every tensor of the module). The
    /// model's own normaliser is host-side state, set when the model was built
    /// ([`AnyModel::from_state`]); the file's copy is loaded into [`Exported::normalizer`].
    ///
    /// # Errors
    /// [`ExportError::Store`] if the file cannot be read; [`ExportError::Mismatch`] if tensors
    /// are missing, extra or of other shapes.
    pub fn load(&mut self, path: &Path) -> Result<(), ExportError> {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .skip_enum_variants(true);
        let result = self
            .load_from(&mut store)
            .map_err(|error| ExportError::Store {
                operation: "reading",
                path: path.display().to_string(),
                message: error.to_string(),
            })?;
        if !result.is_success() || !result.missing.is_empty() || !result.unused.is_empty() {
            return Err(ExportError::Mismatch {
                path: path.display().to_string(),
                message: format!("{result}"),
            });
        }
        Ok(())
    }
}

/// The header metadata of a run's export: what the tensors are and how to use them.
pub fn metadata(config: &TrainConfig, model: &AnyModel) -> Vec<(String, String)> {
    let action = match TrainableModelSpec::action(model) {
        ActionSpec::Discrete { n } => json!({ "Discrete": { "n": n } }),
        ActionSpec::Continuous { low, high } => {
            json!({ "Continuous": { "low": low, "high": high } })
        }
    };
    let actor = match &config.data.policy {
        CollectPolicy::Actor(agent) => serde_json::to_string(agent).unwrap_or_default(),
        _ => "null".to_string(),
    };
    vec![
        ("model_kind".into(), model.kind().to_string()),
        ("env".into(), config.env.clone()),
        ("obs_dim".into(), WorldModel::obs_dim(model).to_string()),
        ("action_space".into(), action.to_string()),
        (
            "model_config".into(),
            serde_json::to_string(&config.model).unwrap_or_default(),
        ),
        ("actor_config".into(), actor),
    ]
}

/// The action spec of any model (a local name: `TrainableModel` and `WorldModel` both have one).
struct TrainableModelSpec;

impl TrainableModelSpec {
    fn action(model: &AnyModel) -> &ActionSpec {
        WorldModel::action_spec(model)
    }
}

/// Reference predictions of the exported cVAE (and actor) for `n` seeded inputs, as JSON
/// (`inputs` and `outputs`, each a map of row-major `[n, width]` arrays):
///
/// - inputs: `obs` (the normaliser's mean plus its standard deviation times a standard normal),
///   `action` (uniform over the action space, raw units), `z` (standard normal, `[n, L]`);
/// - `prior_mean` `[n, L]` (`Cvae::prior_mean`);
/// - `decoded_delta_mean`, `decoded_delta_log_std` `[n, O]`, `decoded_reward`,
///   `decoded_term_logit` `[n]`: the decoder at the given `z` (`Cvae::decode_latent`,
///   normalised units);
/// - `mean_next_obs` `[n, O]`, `mean_reward`, `mean_terminated_prob` `[n]`: the mean prediction
///   (`TransitionModel::mean_next`, raw units);
/// - with an actor: `features` `[n, F]` (the normalised observation) and `actor_log_probs`
///   `[n, classes]` (discrete) or `actor_mean`, `actor_std` `[n, A]` (unit-box units).
///
/// # Errors
/// [`ExportError::NoReference`] for models other than the cVAE.
pub fn reference_outputs(
    model: &AnyModel,
    actor: Option<&wm_agent::Actor>,
    n: usize,
    seed: u64,
    device: &Device,
) -> Result<Value, ExportError> {
    let AnyModel::Transition(AnyTransitionModel::Cvae(cvae)) = model else {
        return Err(ExportError::NoReference {
            kind: model.kind().to_string(),
        });
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normalizer = cvae.normalizer();
    let o = normalizer.obs_mean.len();
    let latent = cvae.config().latent_dim;
    let mut normal = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect()
    };
    let noise = normal(n * o);
    let obs: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, e)| normalizer.obs_mean[i % o] + normalizer.obs_std[i % o] * e)
        .collect();
    let z = normal(n * latent);
    let spec = cvae.spec().action.clone();
    let action: Vec<f32> = match &spec {
        ActionSpec::Discrete { n: classes } => (0..n)
            .map(|_| rng.random_range(0..*classes) as f32)
            .collect(),
        ActionSpec::Continuous { low, high } => (0..n * low.len())
            .map(|i| {
                let j = i % low.len();
                rng.random_range(low[j]..=high[j])
            })
            .collect(),
    };
    let width = spec.raw_width();
    let tensor = |values: &[f32], cols: usize| {
        Tensor::<2>::from_data(TensorData::new(values.to_vec(), [n, cols]), device)
    };
    let (obs_t, action_t, z_t) = (tensor(&obs, o), tensor(&action, width), tensor(&z, latent));
    let rows2 = |t: Tensor<2>| -> Value {
        let [_, cols] = t.dims();
        let flat = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        Value::from(
            flat.chunks(cols.max(1))
                .map(|row| row.to_vec())
                .collect::<Vec<_>>(),
        )
    };
    let rows1 = |t: Tensor<1>| -> Value {
        Value::from(
            t.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default(),
        )
    };
    let (delta_mean, delta_log_std, reward, term) =
        cvae.decode_latent(obs_t.clone(), action_t.clone(), z_t.clone());
    let mean = cvae.mean_next(obs_t.clone(), action_t.clone());
    let mut outputs = serde_json::Map::new();
    outputs.insert(
        "prior_mean".into(),
        rows2(cvae.prior_mean(obs_t.clone(), action_t.clone())),
    );
    outputs.insert("decoded_delta_mean".into(), rows2(delta_mean));
    outputs.insert("decoded_delta_log_std".into(), rows2(delta_log_std));
    outputs.insert("decoded_reward".into(), rows1(reward));
    outputs.insert("decoded_term_logit".into(), rows1(term));
    outputs.insert("mean_next_obs".into(), rows2(mean.next_obs));
    outputs.insert("mean_reward".into(), rows1(mean.reward));
    outputs.insert("mean_terminated_prob".into(), rows1(mean.terminated_prob));
    let mut inputs = json!({
        "obs": rows2(obs_t.clone()),
        "action": rows2(action_t),
        "z": rows2(z_t),
    });
    if let Some(actor) = actor {
        let features = model.features(&model.start(&Context::new(obs_t), false));
        inputs["features"] = rows2(features.clone());
        match actor.forward(features) {
            wm_agent::PolicyDist::Categorical { log_probs } => {
                outputs.insert("actor_log_probs".into(), rows2(log_probs));
            }
            wm_agent::PolicyDist::Normal { mean, std } => {
                outputs.insert("actor_mean".into(), rows2(mean));
                outputs.insert("actor_std".into(), rows2(std));
            }
        }
    }
    Ok(json!({ "seed": seed, "inputs": inputs, "outputs": outputs }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wm_models::{CvaeConfig, ModelSpec};

    fn cvae_and_actor(seed: u64, device: &Device) -> (AnyModel, wm_agent::Actor) {
        device.seed(seed);
        let spec = ModelSpec {
            obs_dim: 3,
            action: ActionSpec::Continuous {
                low: vec![-2.0],
                high: vec![2.0],
            },
        };
        let normalizer = Normalizer {
            obs_mean: vec![0.1, -0.2, 0.3],
            obs_std: vec![1.5, 0.5, 2.0],
            delta_mean: vec![0.01, 0.0, -0.01],
            delta_std: vec![0.1, 0.2, 0.3],
            reward_mean: -3.0,
            reward_std: 2.0,
        };
        let config = CvaeConfig {
            hidden: vec![8, 6],
            latent_dim: 2,
            ..CvaeConfig::default()
        };
        let model = AnyModel::Transition(AnyTransitionModel::Cvae(
            config.init(&spec, normalizer, device),
        ));
        let bounds = wm_agent::PolicyBounds {
            min_std: 0.1,
            max_std: 1.0,
            unimix: 0.01,
        };
        let actor = wm_agent::Actor::new(3, &[5], &spec.action, bounds, device);
        (model, actor)
    }

    fn predictions(exported: &Exported, device: &Device) -> Vec<f32> {
        let obs = Tensor::<2>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 2.0, 0.0, 0.3, -0.7], [2, 3]),
            device,
        );
        let action = Tensor::<2>::from_data(TensorData::new(vec![1.5f32, -0.5], [2, 1]), device);
        let AnyModel::Transition(model) = &exported.model else {
            panic!("a one-step model")
        };
        let mean = model.mean_next(obs.clone(), action);
        let features = exported
            .model
            .features(&exported.model.start(&Context::new(obs), false));
        let wm_agent::PolicyDist::Normal {
            mean: actor_mean,
            std,
        } = exported.actor.as_ref().expect("an actor").forward(features)
        else {
            panic!("a continuous actor")
        };
        [
            mean.next_obs.into_data(),
            mean.reward.into_data(),
            mean.terminated_prob.into_data(),
            actor_mean.into_data(),
            std.into_data(),
        ]
        .into_iter()
        .flat_map(|data| data.convert::<f32>().try_to_vec::<f32>().expect("f32"))
        .collect()
    }

    #[test]
    fn export_round_trips_through_safetensors_into_a_fresh_model() {
        let device = wm_backend::test_device();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("model.safetensors");
        let (model, actor) = cvae_and_actor(1, &device);
        let original = Exported::new(model, Some(actor), &device);
        original
            .save(&path, &[("model_kind".into(), "cvae".into())])
            .expect("save");
        // Other initial weights, the same normaliser (host state, set at construction).
        let (fresh_model, fresh_actor) = cvae_and_actor(2, &device);
        let mut loaded = Exported::new(fresh_model, Some(fresh_actor), &device);
        let want = predictions(&original, &device);
        assert_ne!(
            predictions(&loaded, &device),
            want,
            "the seeds give other weights"
        );
        loaded.load(&path).expect("load");
        assert_eq!(predictions(&loaded, &device), want);
        assert_eq!(
            loaded
                .normalizer
                .as_ref()
                .map(NormalizerTensors::to_normalizer),
            original
                .normalizer
                .as_ref()
                .map(NormalizerTensors::to_normalizer)
        );
        // Saving again over the file is refused: exports never overwrite.
        let again = original.save(&path, &[]).expect_err("the file exists");
        assert!(again.to_string().contains("writing"), "{again}");
    }

    #[test]
    fn exported_names_are_pytorch_style_with_out_by_in_weights() {
        let device = wm_backend::test_device();
        let (model, actor) = cvae_and_actor(1, &device);
        let names = Exported::new(model, Some(actor), &device).tensor_names();
        let shape = |name: &str| -> Vec<usize> {
            names
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no {name} in {names:?}"))
                .1
                .clone()
        };
        // x = [s_n (3), a (1)]: the decoder reads [x, z (2)], 8 then 6 hidden, 2 O + 2 out.
        assert_eq!(shape("model.decoder.layers.0.weight"), vec![8, 6]);
        assert_eq!(shape("model.decoder.layers.2.weight"), vec![8, 6]);
        assert_eq!(shape("model.decoder.layers.2.bias"), vec![8]);
        assert_eq!(shape("model.prior.layers.0.weight"), vec![8, 4]);
        assert_eq!(shape("model.posterior.layers.0.weight"), vec![8, 7]);
        assert_eq!(shape("model.reward_log_std"), vec![1]);
        assert_eq!(shape("actor.net.layers.0.weight"), vec![5, 3]);
        assert_eq!(shape("actor.net.layers.1.weight"), vec![2, 5]);
        assert_eq!(shape("normalizer.obs_mean"), vec![3]);
        assert_eq!(shape("normalizer.reward_std"), vec![1]);
        assert_eq!(names.len(), 3 * 3 * 2 + 1 + 2 * 2 + 6, "{names:?}");
    }
}
