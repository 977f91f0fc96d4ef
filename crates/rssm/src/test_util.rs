//! Test helpers: a lock around the device's process-wide RNG; the device is flex, or the one
//! `WM_TEST_DEVICE` names (`wm_backend::test_device`).

use burn::tensor::Device;

/// burn-flex and libtorch each keep one process-wide RNG behind `Device::seed`, so tests running in parallel
/// would interleave their draws. Every test that draws random numbers holds this lock.
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
