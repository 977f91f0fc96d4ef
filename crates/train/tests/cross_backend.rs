//! Checkpoints move between backends: a run trained on flex loads on libtorch (`tch-cpu`) and the
//! reverse, through the real trainer and checkpoint code, and both backends then make the same
//! deterministic predictions; a run resumes on the other backend, optimiser state included.
//!
//! Needs the `tch` feature (and libtorch at run time: scripts/setup-libtorch.sh).
#![cfg(feature = "tch")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wm_backend::{Device, DeviceSpec};
use wm_imagine::{Context, ImagineActions, Rollout, WorldModel};
use wm_replay::{ReplayBuffer, SequenceMode};
use wm_train::{AnyModel, TrainConfig, TrainOptions};

/// Largest allowed difference between the two backends' predictions: `ABS + REL * |value|`.
/// Matrix products sum in another order on each backend, so the last bits of an f32 differ.
const ABS: f32 = 1e-4;
const REL: f32 = 1e-4;
/// Imagined steps compared.
const HORIZON: usize = 5;
/// Start states compared.
const BATCH: usize = 16;

fn config(name: &str, updates: usize) -> TrainConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name);
    let mut overrides: Vec<String> = [
        "data.prefill_steps=300",
        "data.eval_steps=200",
        "schedule.log_every=5",
        "schedule.eval_every=1000",
        "schedule.checkpoint_every=10",
        "eval.iwae_samples=[1]",
        "eval.max_nll_transitions=64",
        "pipeline.deterministic=true",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    overrides.push(format!("schedule.updates={updates}"));
    if name.contains("rssm") {
        overrides.extend(
            [
                "model.deter=16",
                "model.hidden=16",
                "model.encoder_hidden=[16]",
                "model.decoder_hidden=[16]",
                "model.head_hidden=[16]",
            ]
            .map(String::from),
        );
        overrides.extend(["optim.batch_size=4", "optim.seq_len=12"].map(String::from));
    } else {
        overrides.extend(["model.hidden=[16, 16]", "optim.batch_size=32"].map(String::from));
    }
    TrainConfig::load(&path, &overrides).expect("the tiny config is valid")
}

fn options(runs: &Path, device: DeviceSpec) -> TrainOptions {
    TrainOptions {
        runs_dir: runs.to_path_buf(),
        device,
        progress: false,
        interrupt: Arc::new(AtomicBool::new(false)),
    }
}

/// Predictions of `model` from held-out data: the start state filtered from a short real history
/// (the RSSM's posterior mode; the last observation for one-step models), then `HORIZON`
/// imagined steps under the actions that were really taken. All central (sample: false).
fn predictions(model: &AnyModel, eval: &ReplayBuffer, device: &Device) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let history = 4;
    let batch = eval
        .sample_sequences(
            &mut rng,
            BATCH,
            history + HORIZON,
            SequenceMode::WithinEpisodes,
        )
        .expect("held-out sequences");
    let tensors = wm_train::trainer::sequence_tensors(&batch, device);
    let [b, _, o] = tensors.obs.dims();
    let a = tensors.action.dims()[2];
    let context = Context::with_history(
        tensors.obs.clone().narrow(1, 0, history),
        tensors.action.clone().narrow(1, 0, history),
        tensors.is_first.clone().narrow(1, 0, history),
    );
    let actions = tensors.action.clone().narrow(1, history, HORIZON);
    assert_eq!(actions.dims(), [b, HORIZON, a]);
    fn read<S>(rollout: Rollout<S>) -> Vec<Vec<f32>> {
        let [b, h, o] = rollout.obs.dims();
        vec![
            host(rollout.obs.reshape([b * h * o])),
            host(rollout.reward.reshape([b * h])),
            host(rollout.continue_prob.reshape([b * h])),
        ]
    }
    match model {
        AnyModel::Transition(model) => {
            let start = model.start(&context, false);
            let mut out = read(model.imagine(&start, ImagineActions::Sequence(actions), false));
            out.push(host(model.observation(&start).reshape([b * o])));
            out
        }
        AnyModel::Rssm(model) => {
            let start = model.start(&context, false);
            let mut out = read(WorldModel::imagine(
                model,
                &start,
                ImagineActions::Sequence(actions),
                false,
            ));
            out.push(host(model.observation(&start).reshape([b * o])));
            out
        }
    }
}

fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

fn assert_close(what: &str, flex: &[Vec<f32>], tch: &[Vec<f32>]) {
    let names = [
        "observations",
        "rewards",
        "continue probabilities",
        "start observations",
    ];
    assert_eq!(flex.len(), tch.len());
    for ((name, a), b) in names.iter().zip(flex).zip(tch) {
        assert_eq!(a.len(), b.len(), "{what}: {name}");
        assert!(
            a.iter().chain(b).all(|v| v.is_finite()),
            "{what}: {name} not finite"
        );
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() - REL * x.abs())
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(
            worst <= ABS,
            "{what}: {name} differ between flex and tch-cpu by up to {worst} (beyond the relative part)"
        );
    }
    // The predictions are not trivially equal (say, all zeros).
    assert!(
        flex[0].iter().any(|v| v.abs() > 1e-3),
        "{what}: predictions are all near zero"
    );
}

/// Trains `config_name` on `trained_on`, loads the checkpoint on both backends, compares.
fn round_trip(config_name: &str, trained_on: DeviceSpec) {
    let runs = tempfile::tempdir().expect("temp dir");
    let outcome = wm_train::train(config(config_name, 20), &options(runs.path(), trained_on))
        .expect("training");
    assert_eq!(outcome.updates_this_run, 20);
    let flex = Device::flex();
    let tch = DeviceSpec::TchCpu
        .init()
        .expect("the tch feature is built in");
    // One loader at a time: each holds the held-out replay file's lock.
    let load = |device: &Device| {
        let (_, model, eval, update) = wm_train::load_for_eval(&outcome.run.dir, device)
            .unwrap_or_else(|error| panic!("loading on {device:?}: {error}"));
        assert_eq!(update, 20);
        (model.kind(), predictions(&model, &eval, device))
    };
    let (kind_flex, on_flex) = load(&flex);
    let (kind_tch, on_tch) = load(&tch);
    assert_eq!(kind_flex, kind_tch);
    assert_close(
        &format!("{config_name} trained on {trained_on}"),
        &on_flex,
        &on_tch,
    );
}

#[test]
fn cvae_checkpoint_from_flex_predicts_the_same_on_tch_cpu() {
    round_trip("cartpole_cvae.ron", DeviceSpec::Cpu);
}

#[test]
fn cvae_checkpoint_from_tch_cpu_predicts_the_same_on_flex() {
    round_trip("pendulum_cvae.ron", DeviceSpec::TchCpu);
}

#[test]
fn rssm_checkpoint_from_flex_predicts_the_same_on_tch_cpu() {
    round_trip("pendulum_rssm.ron", DeviceSpec::Cpu);
}

#[test]
fn rssm_checkpoint_from_tch_cpu_predicts_the_same_on_flex() {
    round_trip("cartpole_rssm.ron", DeviceSpec::TchCpu);
}

/// A run started on one backend continues on the other: parameters and Adam's moments load
/// there, and the loss keeps finite.
#[test]
fn a_run_resumes_on_the_other_backend() {
    for (first, second, name) in [
        (
            DeviceSpec::Cpu,
            DeviceSpec::TchCpu,
            "pendulum_gaussian_mlp.ron",
        ),
        (DeviceSpec::TchCpu, DeviceSpec::Cpu, "pendulum_rssm.ron"),
    ] {
        let runs = tempfile::tempdir().expect("temp dir");
        let outcome =
            wm_train::train(config(name, 20), &options(runs.path(), first)).expect("training");
        let resumed = wm_train::resume(
            &outcome.run.dir,
            &["schedule.updates=30".to_string()],
            &options(runs.path(), second),
        )
        .unwrap_or_else(|error| panic!("{name}: resuming a {first} run on {second}: {error}"));
        assert_eq!(resumed.updates_this_run, 10, "{name}");
        let losses: Vec<(i64, f32)> = wm_train::tensorboard::read_scalars(&outcome.run.dir)
            .expect("events")
            .into_iter()
            .filter(|s| s.tag == "loss/total")
            .map(|s| (s.step, s.value))
            .collect();
        // (tensorboard-rs names event files by the second, so a resume within the same second
        // replaces the first part's file: only the resumed steps are checked.)
        let steps: Vec<i64> = losses.iter().map(|l| l.0).collect();
        assert!(
            steps.ends_with(&[25, 30]),
            "{name}: loss/total steps {steps:?}"
        );
        assert!(losses.iter().all(|l| l.1.is_finite()), "{name}: {losses:?}");
        let (_, _, _, update) = wm_train::load_for_eval(&outcome.run.dir, &Device::flex())
            .expect("the resumed checkpoint loads");
        assert_eq!(update, 30, "{name}");
    }
}
