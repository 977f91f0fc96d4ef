//! Test helpers: a lock around burn-flex's process-wide RNG.

use burn::tensor::Device;

/// burn-flex keeps one process-wide RNG behind `Device::seed`, so tests running in parallel
/// would interleave their draws. Every test that draws random numbers holds this lock.
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Locks the device RNG and seeds it; keep the guard alive for the whole test.
pub fn seeded(seed: u64) -> (std::sync::MutexGuard<'static, ()>, Device) {
    let guard = DEVICE_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Device::flex();
    device.seed(seed);
    (guard, device)
}
