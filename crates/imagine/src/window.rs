//! [`HistoryWindow`]: the recent real steps of one episode, to start imagination from.

use std::collections::VecDeque;

use burn::tensor::{Device, Tensor, TensorData};

use crate::Context;

/// The last `capacity` real steps of one running episode, kept on the host, from which a
/// batch-1 [`Context`] is built at every decision: the RSSM filters the window into its state
/// (starting from its initial state at the window's first step, so a window shorter than the
/// episode is an approximation that improves with `capacity`), while one-step models read the
/// last observation only. This is the simple way to "reset from real observations" in an agent
/// loop; [`WorldModel::observe_step`](crate::WorldModel::observe_step) is the incremental one.
#[derive(Clone, Debug)]
pub struct HistoryWindow {
    capacity: usize,
    obs_dim: usize,
    action_width: usize,
    /// `(action that led to obs, obs, is_first)` per step, oldest first.
    steps: VecDeque<(Vec<f32>, Vec<f32>, bool)>,
}

impl HistoryWindow {
    /// An empty window of at most `capacity` steps.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn new(capacity: usize, obs_dim: usize, action_width: usize) -> Self {
        assert!(capacity > 0, "a history window needs a capacity > 0");
        Self {
            capacity,
            obs_dim,
            action_width,
            steps: VecDeque::with_capacity(capacity),
        }
    }

    /// Starts a new episode at its first observation.
    ///
    /// # Panics
    /// If `obs` does not have `obs_dim` values.
    pub fn reset(&mut self, obs: &[f32]) {
        self.steps.clear();
        self.add(vec![0.0; self.action_width], obs, true);
    }

    /// Appends a real step: the action taken and the observation it led to; the oldest step
    /// falls out once the window is full.
    ///
    /// # Panics
    /// Before the first [`reset`](HistoryWindow::reset), or on a width mismatch.
    pub fn push(&mut self, action: &[f32], obs: &[f32]) {
        assert!(!self.steps.is_empty(), "HistoryWindow::push before reset");
        assert_eq!(
            action.len(),
            self.action_width,
            "action has {} values, expected {}",
            action.len(),
            self.action_width
        );
        self.add(action.to_vec(), obs, false);
    }

    fn add(&mut self, action: Vec<f32>, obs: &[f32], first: bool) {
        assert_eq!(
            obs.len(),
            self.obs_dim,
            "observation has {} values, expected {}",
            obs.len(),
            self.obs_dim
        );
        if self.steps.len() == self.capacity {
            self.steps.pop_front();
        }
        self.steps.push_back((action, obs.to_vec(), first));
    }

    /// Steps held, at most `capacity`.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether nothing was observed yet.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The window as a batch-1 context on `device`.
    ///
    /// # Shapes
    /// - history `[1, T, O]`, `[1, T, A]`, `[1, T]` with `T = len()`; current observation `[1, O]`
    ///
    /// # Panics
    /// Before the first [`reset`](HistoryWindow::reset).
    pub fn context(&self, device: &Device) -> Context {
        assert!(
            !self.steps.is_empty(),
            "HistoryWindow::context before reset"
        );
        let t = self.steps.len();
        let (mut obs, mut action, mut first) = (Vec::new(), Vec::new(), Vec::new());
        for (a, o, f) in &self.steps {
            action.extend_from_slice(a);
            obs.extend_from_slice(o);
            first.push(if *f { 1.0f32 } else { 0.0 });
        }
        Context::with_history(
            Tensor::from_data(TensorData::new(obs, [1, t, self.obs_dim]), device),
            Tensor::from_data(TensorData::new(action, [1, t, self.action_width]), device),
            Tensor::from_data(TensorData::new(first, [1, t]), device),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::vec;

    #[test]
    fn history_window_keeps_the_last_steps_and_builds_a_batch_one_context() {
        let device = wm_backend::test_device();
        let mut w = HistoryWindow::new(3, 2, 1);
        assert!(w.is_empty());
        w.reset(&[0.0, 0.0]);
        let c = w.context(&device);
        assert_eq!(vec(c.history().unwrap().is_first.clone()), [1.0]);
        for i in 1..=4 {
            w.push(&[i as f32], &[i as f32, -(i as f32)]);
        }
        assert_eq!(w.len(), 3);
        let c = w.context(&device);
        let h = c.history().unwrap();
        assert_eq!(h.obs.dims(), [1, 3, 2], "actual {:?}", h.obs.dims());
        assert_eq!(vec(h.obs.clone()), [2.0, -2.0, 3.0, -3.0, 4.0, -4.0]);
        assert_eq!(vec(h.action.clone()), [2.0, 3.0, 4.0]);
        assert_eq!(vec(h.is_first.clone()), [0.0, 0.0, 0.0]);
        assert_eq!(vec(c.obs().clone()), [4.0, -4.0]);
        w.reset(&[9.0, 9.0]);
        assert_eq!(w.len(), 1);
    }
}
