//! `wm device`: which devices this build has, and a smoke test of one.

use anyhow::Context;
use wm_backend::{DeviceSpec, compiled_devices};

use crate::cli::DeviceArgs;

pub fn check(args: &DeviceArgs) -> anyhow::Result<()> {
    println!("devices in this build: {}", compiled_devices().join(", "));
    let spec: DeviceSpec = args.device.parse()?;
    let device = spec
        .init()
        .with_context(|| format!("initialising device `{spec}`"))?
        .autodiff();
    let gradient_sum = smoke_test(&device);
    anyhow::ensure!(
        (gradient_sum - 12.0).abs() < 1e-4,
        "device `{spec}` computed a wrong gradient: sum {gradient_sum}, expected 12"
    );
    println!("device `{spec}` works: {device:?}");
    Ok(())
}

/// d/dx sum(x * x) at x = [1, 2, 3] is [2, 4, 6], whose sum is 12.
fn smoke_test(device: &wm_backend::Device) -> f32 {
    use burn::tensor::Tensor;
    let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], device).require_grad();
    let grads = (x.clone() * x.clone()).sum().backward();
    x.grad(&grads)
        .map(|g| g.sum().into_scalar::<f32>())
        .unwrap_or(f32::NAN)
}
