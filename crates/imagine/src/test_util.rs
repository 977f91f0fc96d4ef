//! Test helpers: a lock around burn-flex's process-wide RNG, host read-backs.

use burn::tensor::{Device, Tensor};

/// burn-flex keeps one process-wide RNG behind `Device::seed`, so tests running in parallel
/// would interleave their draws (weight initialisation included). Every test that draws random
/// numbers holds this lock for its whole run.
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Locks the device RNG and seeds it; keep the guard alive for the whole test.
pub fn seeded(seed: u64) -> (std::sync::MutexGuard<'static, ()>, Device) {
    let guard = DEVICE_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = wm_backend::test_device();
    device.seed(seed);
    (guard, device)
}

/// A tensor's values on the host.
pub fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

/// burn initialises parameters lazily, at their first use, drawing from the device RNG then;
/// materialising them right after `init` keeps later draws (sampling noise) reproducible.
pub fn materialise<M: burn::module::Module>(model: M) -> M {
    struct Visit;
    impl burn::module::ModuleVisitor for Visit {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Visit);
    model
}
