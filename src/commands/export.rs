//! `wm export`: a run's weights as safetensors.

use anyhow::Context;
use wm_backend::DeviceSpec;
use wm_train::export::{Exported, metadata, reference_outputs};
use wm_train::play::PlayableRun;

use crate::cli::{ExportArgs, ExportFormat};

/// The most rows `--reference-rows` takes.
const MAX_REFERENCE_ROWS: usize = 100_000;
/// The seed of the reference inputs (fixed: the reference is a property of the weights).
const REFERENCE_SEED: u64 = 0;

pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let ExportFormat::Safetensors = args.format;
    anyhow::ensure!(
        (1..=MAX_REFERENCE_ROWS).contains(&args.reference_rows),
        "--reference-rows must be between 1 and {MAX_REFERENCE_ROWS}, got {}",
        args.reference_rows
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join("export.safetensors"));
    for (flag, path) in [
        ("--out", Some(&out)),
        ("--reference", args.reference.as_ref()),
    ] {
        if let Some(path) = path
            && path.exists()
        {
            anyhow::bail!(
                "{flag} {}: the file exists; remove it or choose another",
                path.display()
            );
        }
    }
    // Exports are read on the host: the CPU device, whatever the run trained on.
    let device = DeviceSpec::Cpu.init()?;
    let run = PlayableRun::load_trained(&args.run, &device)
        .with_context(|| format!("loading run {}", args.run.display()))?;
    // The reference is computed before anything is written, so a model without one fails clean.
    let reference = match &args.reference {
        Some(_) => Some(reference_outputs(
            &run.model,
            run.policy_net.as_ref(),
            args.reference_rows,
            REFERENCE_SEED,
            &device,
        )?),
        None => None,
    };
    let meta = metadata(&run.config, &run.model);
    let exported = Exported::new(run.model, run.policy_net, &device);
    let names = exported.tensor_names();
    exported.save(&out, &meta)?;
    println!(
        "{} tensors of the {} after {} updates written to {}",
        names.len(),
        meta.iter()
            .find(|(k, _)| k == "model_kind")
            .map_or("model", |(_, v)| v.as_str()),
        run.update,
        out.display()
    );
    for (name, shape) in &names {
        println!("  {name} {shape:?}");
    }
    if let (Some(path), Some(reference)) = (&args.reference, reference) {
        std::fs::write(path, serde_json::to_string(&reference)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("reference outputs written to {}", path.display());
    }
    Ok(())
}
