//! A finished run's trained acting policy, loaded for playing on the real environment
//! (`wm play`, and the policy return of `wm eval`): the world model from the checkpoint, and the
//! actor network when the run trained one, acting as the run's config says (the actor's mode, or
//! the planner's mean plan over the trained model) through [`crate::acting`], the same code as
//! the trainer's policy evaluation.

use std::path::Path;

use wm_backend::Device;

use crate::acting::{WatchedStep, evaluate_policy_watched};
use crate::checkpoint::Checkpoint;
use crate::config::{CollectPolicy, TrainConfig};
use crate::error::TrainError;
use crate::model::AnyModel;
use crate::run::RunFolder;
use crate::state::{restore_agent, restore_model};

/// A run's world model and acting policy, on a plain (non-autodiff) device.
pub struct PlayableRun {
    /// The run's config (`data.policy` says how it acts).
    pub config: TrainConfig,
    /// The trained world model.
    pub model: AnyModel,
    /// The trained actor network (`data.policy: Actor(..)`), `None` for a planner.
    pub policy_net: Option<wm_agent::Actor>,
    /// Optimiser updates of the checkpoint.
    pub update: u64,
}

/// One played episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayedEpisode {
    /// The reset seed.
    pub seed: u64,
    /// Sum of the rewards.
    pub return_: f64,
    /// Steps taken.
    pub length: usize,
}

impl PlayableRun {
    /// Loads the run in `run_dir` onto `device`, for playing its acting policy.
    ///
    /// # Errors
    /// As [`PlayableRun::load_trained`], and [`TrainError::Run`] when the run acted with random
    /// actions (there is no trained policy to play).
    pub fn load(run_dir: &Path, device: &Device) -> Result<Self, TrainError> {
        let run = Self::load_trained(run_dir, device)?;
        if matches!(run.config.data.policy, CollectPolicy::Random) {
            return Err(TrainError::Run {
                run: run_dir.to_path_buf(),
                message: "acts with random actions (data.policy: Random): it has no trained \
                          policy to play; train with a planner or an actor (e.g. \
                          configs/cartpole_cvae_actor.ron)"
                    .into(),
            });
        }
        Ok(run)
    }

    /// Loads the run in `run_dir` onto `device` whatever its acting policy (`wm export`).
    ///
    /// # Errors
    /// [`TrainError::Run`] when the folder is missing, has no config or no checkpoint, or its
    /// checkpoint does not fit its config; checkpoint and config errors as
    /// [`crate::load_for_eval`] gives them.
    pub fn load_trained(run_dir: &Path, device: &Device) -> Result<Self, TrainError> {
        let run = RunFolder::open(run_dir);
        let fail = |message: &str| TrainError::Run {
            run: run_dir.to_path_buf(),
            message: message.to_string(),
        };
        if !run_dir.is_dir() {
            return Err(fail("no such run folder"));
        }
        if !run.config().is_file() {
            return Err(fail("has no config.ron: not a run folder of `wm train`"));
        }
        let config = TrainConfig::load(&run.config(), &[])?;
        if !run.checkpoint().is_file() {
            return Err(fail("has no checkpoint yet: nothing trained"));
        }
        let checkpoint = Checkpoint::load(&run.checkpoint())?;
        let model = restore_model(&config, &checkpoint, device, &run)?;
        let policy_net =
            restore_agent(&config, &checkpoint, &model, device, &run)?.map(|agent| agent.policy());
        Ok(Self {
            config,
            model,
            policy_net,
            update: checkpoint.meta.update,
        })
    }

    /// What acts: `"actor"` or `"planner"`.
    pub fn policy_kind(&self) -> &'static str {
        match self.config.data.policy {
            CollectPolicy::Actor(_) => "actor",
            _ => "planner",
        }
    }

    /// Plays `episodes` episodes of the run's environment from reset seeds `seed, seed + 1, ...`
    /// without exploration (the actor's mode, the planner's mean plan), calling `watch` with each
    /// episode's first observation and every step.
    ///
    /// # Errors
    /// [`TrainError::Collect`] if the environment fails.
    pub fn play(
        &self,
        episodes: usize,
        seed: u64,
        device: &Device,
        watch: &mut dyn FnMut(WatchedStep<'_>),
    ) -> Result<Vec<PlayedEpisode>, TrainError> {
        let results = evaluate_policy_watched(
            &self.model,
            self.policy_net.as_ref(),
            &self.config.env,
            &self.config.data.policy,
            episodes,
            seed,
            device,
            watch,
        )
        .map_err(|source| crate::data::CollectError::Env {
            env: self.config.env.clone(),
            source,
        })?;
        Ok(results
            .into_iter()
            .enumerate()
            .map(|(i, (return_, length))| PlayedEpisode {
                seed: seed.wrapping_add(i as u64),
                return_,
                length,
            })
            .collect())
    }
}
