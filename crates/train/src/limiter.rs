//! The replay-ratio rate limiter (DreamerV3's samples-per-insert limiter, counted in updates).
//!
//! With `inserted` environment steps in replay and `updates` gradient updates done, the error is
//! `updates - ratio * max(0, inserted - prefill)`. The learner may update while the error is below
//! `+tolerance` (in updates), the workers may step while it is above `-tolerance`: whoever runs
//! ahead waits for the other. The workers' gate counts the steps of episodes *sent* (in replay
//! or still in the channel), so that a learner busy with a long evaluation does not let the
//! workers fill the channel far past the tolerance; the learner's gate counts the steps in
//! replay. Once the learner drains the channel the two counts agree, so one gate is always open
//! (no deadlock) as long as the tolerance is positive. Before `prefill` steps are in replay the
//! learner waits and the workers run freely: that is the prefill.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Shared counters and the two gates.
#[derive(Debug)]
pub struct RateLimiter {
    ratio: f64,
    prefill: u64,
    tolerance_updates: f64,
    inserted: AtomicU64,
    sent: AtomicU64,
    updates: AtomicU64,
    stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
}

impl RateLimiter {
    /// `ratio`: updates per environment step; `tolerance_steps`: how many environment steps either
    /// side may run ahead (converted to updates with the ratio, at least one update).
    pub fn new(
        ratio: f64,
        prefill: u64,
        tolerance_steps: u64,
        inserted: u64,
        updates: u64,
    ) -> Self {
        Self {
            ratio,
            prefill,
            tolerance_updates: (ratio * tolerance_steps as f64).max(1.0),
            inserted: AtomicU64::new(inserted),
            sent: AtomicU64::new(inserted),
            updates: AtomicU64::new(updates),
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
        }
    }

    /// Updates minus the updates the inserted data pays for.
    pub fn error(&self) -> f64 {
        self.error_at(self.inserted.load(Ordering::Acquire))
    }

    fn error_at(&self, steps: u64) -> f64 {
        let paid = self.ratio * steps.saturating_sub(self.prefill) as f64;
        self.updates.load(Ordering::Acquire) as f64 - paid
    }

    /// Whether the learner may take another update now: the prefill is in, and the updates are
    /// not more than the tolerance ahead of what the inserted environment steps pay for.
    pub fn learner_may_update(&self) -> bool {
        self.inserted.load(Ordering::Acquire) >= self.prefill
            && self.error() + 1.0 <= self.tolerance_updates
    }

    /// Whether the workers may take another environment step now.
    pub fn worker_may_step(&self) -> bool {
        self.error_at(
            self.sent
                .load(Ordering::Acquire)
                .max(self.inserted.load(Ordering::Acquire)),
        ) > -self.tolerance_updates
    }

    /// Counts the steps of an episode a worker is about to send (before the learner inserts it).
    pub fn add_sent(&self, steps: u64) {
        self.sent.fetch_add(steps, Ordering::AcqRel);
    }

    /// Counts steps the learner put into replay.
    pub fn add_inserted(&self, steps: u64) {
        self.inserted.fetch_add(steps, Ordering::AcqRel);
    }

    /// Counts one update and wakes waiting workers.
    pub fn add_update(&self) {
        self.updates.fetch_add(1, Ordering::AcqRel);
        self.wake.1.notify_all();
    }

    /// Environment steps in replay.
    pub fn inserted(&self) -> u64 {
        self.inserted.load(Ordering::Acquire)
    }

    /// Updates done.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Acquire)
    }

    /// Updates per inserted step after prefill, as achieved so far (NaN before any).
    pub fn achieved_ratio(&self) -> f64 {
        let after_prefill = self.inserted().saturating_sub(self.prefill);
        if after_prefill == 0 {
            f64::NAN
        } else {
            self.updates() as f64 / after_prefill as f64
        }
    }

    /// Asks every waiting party to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.1.notify_all();
    }

    /// Whether a stop was asked for.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Blocks a worker until it may step; returns false when asked to stop instead.
    pub fn wait_worker(&self) -> bool {
        loop {
            if self.stopped() {
                return false;
            }
            if self.worker_may_step() {
                return true;
            }
            let guard = self
                .wake
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A timeout as well as the notification: the counters are atomics read outside the lock.
            let _ = self.wake.1.wait_timeout(guard, Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_sent_but_not_yet_inserted_hold_the_workers_back() {
        // ratio 1, tolerance 10 steps: with 50 steps sent and none inserted (a busy learner)
        // the workers wait, although the replay alone would let them run.
        let limiter = RateLimiter::new(1.0, 0, 10, 0, 0);
        limiter.add_sent(50);
        assert!(
            !limiter.worker_may_step(),
            "50 steps sent, 0 updates: 40 past the tolerance"
        );
        limiter.add_inserted(50);
        assert!(
            !limiter.worker_may_step(),
            "inserting the sent steps does not count them twice"
        );
        for _ in 0..41 {
            limiter.add_update();
        }
        assert!(
            limiter.worker_may_step(),
            "41 updates later the workers are within the tolerance again"
        );
    }

    #[test]
    fn learner_waits_for_prefill_and_workers_run_freely_meanwhile() {
        let limiter = RateLimiter::new(0.5, 100, 10, 0, 0);
        assert!(!limiter.learner_may_update());
        assert!(limiter.worker_may_step());
        limiter.add_inserted(99);
        assert!(!limiter.learner_may_update());
        limiter.add_inserted(1);
        assert!(
            limiter.learner_may_update(),
            "at prefill the tolerance allows a first few updates"
        );
    }

    #[test]
    fn gates_hold_the_ratio_within_the_tolerance() {
        let limiter = RateLimiter::new(0.25, 0, 8, 0, 0);
        // tolerance = 0.25 * 8 = 2 updates.
        limiter.add_inserted(40); // pays for 10 updates
        let mut updates = 0;
        while limiter.learner_may_update() {
            limiter.add_update();
            updates += 1;
        }
        assert_eq!(updates, 12, "10 paid updates plus the 2-update tolerance");
        assert!(limiter.worker_may_step());
        let limiter = RateLimiter::new(0.25, 0, 8, 0, 0);
        limiter.add_inserted(12); // error = -3 <= -2: the workers are too far ahead
        assert!(!limiter.worker_may_step());
        assert!(limiter.learner_may_update(), "one gate is always open");
    }

    #[test]
    fn stop_releases_a_waiting_worker() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1.0, 0, 1, 100, 0));
        let waiting = std::sync::Arc::clone(&limiter);
        let handle = std::thread::spawn(move || waiting.wait_worker());
        std::thread::sleep(Duration::from_millis(20));
        limiter.stop();
        assert!(
            !handle.join().expect("no panic"),
            "a stopped wait returns false"
        );
    }
}
