//! Every numeric field of every shipped config, set to 0, a negative value, NaN and a huge
//! value, gives a clean error or a model, planner and actor-critic that build and take a short
//! step, never a panic. In-process (no `wm` runs), so that the thousands of cases stay fast.
//!
//! Two walks: over the number literals written in each file (the text is edited, so NaN can be
//! written, as RON allows), and over every numeric leaf of the resolved config, defaults
//! included, through `--set`-style overrides (JSON has no NaN, so those get 0, -1 and huge).

use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use wm_backend::Device;
use wm_envs::Action;
use wm_imagine::{Context, WorldModel};
use wm_models::Normalizer;
use wm_plan::Planner;
use wm_replay::ReplayBuffer;
use wm_train::TrainConfig;
use wm_train::config::CollectPolicy;
use wm_train::data::{all_transitions, collect_episodes, model_spec, replay_spec};
use wm_train::model::WithWorldModel;
use wm_train::state::Learner;
use wm_train::update::{agent_update, update_from_replay};

/// Byte ranges of the number literals of `text` outside `//` comments.
fn number_literals(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let code = line.split("//").next().unwrap_or("");
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let starts_number = bytes[i].is_ascii_digit()
                || (bytes[i] == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
            let after_identifier = i > 0
                && (bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b'.');
            if starts_number && !after_identifier {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_digit()
                        || bytes[end] == b'.'
                        || bytes[end] == b'e'
                        || bytes[end] == b'E'
                        || ((bytes[end] == b'-' || bytes[end] == b'+')
                            && matches!(bytes[end - 1], b'e' | b'E')))
                {
                    end += 1;
                }
                found.push((offset + i, offset + end));
                i = end;
            } else {
                i += 1;
            }
        }
        offset += line.len();
    }
    found
}

/// Dotted paths of the numeric leaves (and lists of numbers) of a JSON tree.
fn numeric_paths(tree: &serde_json::Value, prefix: &str, out: &mut Vec<(String, bool)>) {
    match tree {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                numeric_paths(value, &path, out);
            }
        }
        serde_json::Value::Number(number) => out.push((prefix.to_string(), number.is_f64())),
        serde_json::Value::Array(items)
            if items.first().is_some_and(serde_json::Value::is_number) =>
        {
            out.push((prefix.to_string(), false))
        }
        _ => {}
    }
}

/// A computation on any world model: one planning step from the first replayed observation.
struct PlanOnce<'a> {
    planner: &'a mut wm_plan::AnyPlanner,
    context: &'a Context,
}

impl WithWorldModel for PlanOnce<'_> {
    type Output = Action;
    fn run<M: WorldModel>(self, model: &M) -> Action {
        self.planner.plan_one(model, self.context)
    }
}

/// Builds what `config` describes and takes one short step with the part `field` belongs to.
fn exercise(config: &TrainConfig, field: &str, replay: &ReplayBuffer) {
    let device = Device::flex();
    let training = device.clone().autodiff();
    let env = wm_envs::make(&config.env).expect("validated env");
    let spec = model_spec(env.as_ref());
    let data = all_transitions(replay, usize::MAX);
    let normalizer = Normalizer::fit(&data.obs, &data.next_obs, &data.rewards, data.obs_dim);
    let mut learner = Learner::fresh(config, &spec, normalizer, &training);
    if field.starts_with("model") || field.starts_with("optim") {
        let mut optim = config.optim.clone();
        (optim.batch_size, optim.seq_len) = (optim.batch_size.min(8), optim.seq_len.min(8));
        let (model, outcome) = update_from_replay(
            learner.model,
            &mut learner.optimizer,
            replay,
            &mut learner.rng,
            &optim,
            &training,
            true,
        )
        .expect("an update from a filled replay");
        assert!(outcome.applied || !outcome.total.is_finite() || !outcome.grad_norm.is_finite());
        learner.model = model;
    }
    if field.starts_with("data.policy") {
        match &config.data.policy {
            CollectPolicy::Planner(planner) => {
                let mut planner = planner.init(&spec.action, 0);
                let obs = Tensor::<2>::from_data(
                    TensorData::new(data.obs[..data.obs_dim].to_vec(), [1, data.obs_dim]),
                    &device,
                );
                let context = Context::new(obs);
                let model = learner.model.valid();
                let _action = wm_train::TrainableModel::with_world_model(
                    &model,
                    PlanOnce {
                        planner: &mut planner,
                        context: &context,
                    },
                );
            }
            CollectPolicy::Actor(_) => {
                let agent = learner
                    .agent
                    .as_mut()
                    .expect("an actor policy builds an actor-critic");
                agent_update(
                    agent,
                    &learner.model.valid(),
                    replay,
                    &mut learner.rng,
                    &device,
                )
                .expect("an agent update");
            }
            CollectPolicy::Random => {}
        }
    }
}

#[test]
fn every_numeric_field_of_every_shipped_config_errors_cleanly_or_runs() {
    let configs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files: Vec<_> = std::fs::read_dir(&configs_dir)
        .expect("configs")
        .map(|e| e.expect("entry").path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "ron"));
    files.sort();
    assert!(files.len() >= 10, "shipped configs: {files:?}");

    let mut replays: BTreeMap<String, ReplayBuffer> = BTreeMap::new();
    let mut exercised: HashSet<String> = HashSet::new();
    let mut failures: Vec<String> = Vec::new();
    let (mut rejected, mut accepted) = (0usize, 0usize);
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read config");
        let base = TrainConfig::from_ron_str(&text, path, &[])
            .unwrap_or_else(|e| panic!("{}: shipped config fails: {e}", path.display()));
        let replay = replays.entry(base.env.clone()).or_insert_with(|| {
            let mut env = wm_envs::make(&base.env).expect("env");
            let mut buffer = ReplayBuffer::new(replay_spec(env.as_ref()), 10_000).expect("buffer");
            collect_episodes(env.as_mut(), 0, 300, &mut buffer).expect("collect");
            buffer
        });

        // (description, field path for `exercise`, parse result)
        let mut cases: Vec<(String, String, Result<TrainConfig, String>)> = Vec::new();
        for (start, end) in number_literals(&text) {
            let literal = &text[start..end];
            let is_float = literal.contains(['.', 'e', 'E']);
            let values: &[&str] = if is_float {
                &["0.0", "-1.0", "NaN", "1e300"]
            } else {
                &["0", "-1", "NaN", "18446744073709551615"]
            };
            let line = text[..start].lines().count().max(1);
            for value in values {
                let edited = format!("{}{value}{}", &text[..start], &text[end..]);
                let result = catch_unwind(AssertUnwindSafe(|| {
                    TrainConfig::from_ron_str(&edited, path, &[]).map_err(|e| e.to_string())
                }));
                let Ok(result) = result else {
                    failures.push(format!(
                        "{}:{line}: `{literal}` -> {value}: parsing panicked",
                        path.display()
                    ));
                    continue;
                };
                let line_text = text[..end]
                    .rsplit('\n')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                // The section of a literal, for `exercise`: the last `name:` before it in the file.
                let section = [
                    "optim:",
                    "data:",
                    "model:",
                    "pipeline:",
                    "schedule:",
                    "eval:",
                ]
                .iter()
                .filter_map(|s| {
                    text[..start]
                        .rfind(s)
                        .map(|at| (at, s.trim_end_matches(':')))
                })
                .max()
                .map(|(_, s)| s)
                .unwrap_or("");
                let field = if section == "data" && line_text.contains("policy") {
                    "data.policy".to_string()
                } else {
                    section.to_string()
                };
                cases.push((
                    format!("{}:{line}: `{line_text}` with {value}", path.display()),
                    field,
                    result,
                ));
            }
        }
        let mut leaves = Vec::new();
        numeric_paths(&serde_json::to_value(&base).expect("json"), "", &mut leaves);
        for (leaf, is_float) in leaves {
            let values: &[&str] = if is_float {
                &["0.0", "-1.0", "1e300"]
            } else {
                &["0", "-1", "18446744073709551615", "[0]", "[]"]
            };
            for value in values {
                let assignment = format!("{leaf}={value}");
                let result = catch_unwind(AssertUnwindSafe(|| {
                    TrainConfig::from_ron_str(&text, path, std::slice::from_ref(&assignment))
                        .map_err(|e| e.to_string())
                }));
                let Ok(result) = result else {
                    failures.push(format!(
                        "{}: --set {assignment}: parsing panicked",
                        path.display()
                    ));
                    continue;
                };
                cases.push((
                    format!("{}: --set {assignment}", path.display()),
                    leaf.clone(),
                    result,
                ));
            }
        }

        for (description, field, result) in cases {
            match result {
                Err(message) => {
                    rejected += 1;
                    if message.trim().is_empty() || message.trim_end().contains('\n') {
                        failures.push(format!(
                            "{description}: the error is not one line: {message:?}"
                        ));
                    }
                }
                Ok(config) => {
                    accepted += 1;
                    if !exercised.insert(format!("{field}\n{}", config.to_ron())) {
                        continue;
                    }
                    if catch_unwind(AssertUnwindSafe(|| exercise(&config, &field, replay))).is_err()
                    {
                        failures.push(format!(
                            "{description}: accepted, then panicked while building or stepping"
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "config walk: {rejected} values rejected cleanly, {accepted} accepted ({} distinct configs exercised)",
        exercised.len()
    );
    assert!(
        rejected > 500 && accepted > 50,
        "the walk covered too little: {rejected} rejected, {accepted} accepted"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
