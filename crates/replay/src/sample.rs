//! Sampling: uniform transitions (for reward/value heads or a feed-forward world model) and
//! fixed-length sequences (for a recurrent world model such as an RSSM).
//!
//! All batches are flat, row-major `f32` vectors, ready to become tensors. Sampling is
//! driven entirely by the caller's RNG: the same buffer contents and the same RNG state
//! give the same batch.
//!
//! # Sequence alignment (Dreamer convention)
//!
//! A sequence is a window of consecutive *steps*; an episode of `T` transitions has
//! `T + 1` steps, one per observation. Step `t` pairs observation `o_t` with the action
//! that *led to it* and the reward received *on arriving at it*:
//!
//! ```text
//! episode:      o0 --a0,r0--> o1 --a1,r1--> o2 --a2,r2--> o3   (terminated)
//!
//! step t          0      1      2      3
//! obs[t]          o0     o1     o2     o3
//! actions[t]      0      a0     a1     a2     (zeros at is_first: no action led to o0)
//! rewards[t]      0      r0     r1     r2     (0 at is_first)
//! is_first[t]     1      0      0      0
//! is_terminal[t]  0      0      0      1      (1 only at the last obs of a *terminated* episode;
//!                                              a truncated episode ends with is_terminal = 0)
//! ```
//!
//! So a model predicts `o_t` from its state at `t - 1` and `actions[t]`, and predicts
//! `rewards[t]` and `is_terminal[t]` from its state at `t`; `is_first[t]` tells it to
//! reset its recurrent state before step `t`.
//!
//! [`SequenceMode::WithinEpisodes`] takes windows inside single episodes;
//! [`SequenceMode::Straddle`] takes windows over the concatenation of all stored episodes
//! (oldest first), where a window may run into the next episode, marked by `is_first`:
//!
//! ```text
//! episodes:  [o0 o1 o2] [p0 p1 p2 p3] [q0 q1]
//! a window:       o1 o2   p0 p1 p2 p3   q0       (seq_len 7)
//! is_first:       0  0    1  0  0  0    1
//! ```

use std::collections::VecDeque;

use rand::Rng;

use crate::buffer::StoredEpisode;
use crate::episode::{Episode, ReplaySpec};
use crate::error::{ReplayError, Result};

/// How sequences relate to episode boundaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SequenceMode {
    /// Windows lie inside one episode; every valid window (over all episodes) is equally
    /// likely. Episodes with fewer than `seq_len` observations are never sampled.
    #[default]
    WithinEpisodes,
    /// Windows over all stored episodes concatenated in insertion order, with `is_first`
    /// marking where a new episode starts (DreamerV3 style). Every window start is equally
    /// likely, so short episodes (CartPole with a random policy lasts ~20 steps) still
    /// give long sequences.
    Straddle,
}

/// A batch of independent transitions `(o, a, r, o', terminated)`, flat row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TransitionBatch {
    /// Number of transitions `B`.
    pub batch_size: usize,
    /// Values per observation.
    pub obs_dim: usize,
    /// Values per action.
    pub action_width: usize,
    /// `[B * obs_dim]`: the observation the action was taken in.
    pub obs: Vec<f32>,
    /// `[B * action_width]`: the action taken (discrete: the index as f32).
    pub actions: Vec<f32>,
    /// `[B]`: the reward received for the transition.
    pub rewards: Vec<f32>,
    /// `[B * obs_dim]`: the observation the action led to.
    pub next_obs: Vec<f32>,
    /// `[B]`: 1.0 where `next_obs` is a terminal state (the last transition of a
    /// terminated episode), else 0.0. Truncated episodes end with 0.0.
    pub terminated: Vec<f32>,
}

/// A batch of fixed-length sequences, flat row-major `[batch][time][feature]`; see the
/// module docs for the alignment of actions and rewards.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceBatch {
    /// Number of sequences `B`.
    pub batch_size: usize,
    /// Steps per sequence `T`.
    pub seq_len: usize,
    /// Values per observation.
    pub obs_dim: usize,
    /// Values per action.
    pub action_width: usize,
    /// `[B * T * obs_dim]`: observation at each step.
    pub obs: Vec<f32>,
    /// `[B * T * action_width]`: the action that led to `obs[t]`; zeros where `is_first`.
    pub actions: Vec<f32>,
    /// `[B * T]`: the reward received on arriving at `obs[t]`; 0 where `is_first`.
    pub rewards: Vec<f32>,
    /// `[B * T]`: 1.0 at the first observation of an episode.
    pub is_first: Vec<f32>,
    /// `[B * T]`: 1.0 at the final observation of a terminated (not truncated) episode.
    pub is_terminal: Vec<f32>,
}

/// Draws `batch_size` transitions, each stored transition with probability `1 / n_transitions`.
pub(crate) fn sample_transitions<R: Rng + ?Sized>(
    rng: &mut R,
    spec: &ReplaySpec,
    episodes: &VecDeque<StoredEpisode>,
    n_transitions: usize,
    batch_size: usize,
) -> Result<TransitionBatch> {
    if batch_size == 0 {
        return Err(ReplayError::ZeroSampleSize {
            what: "the batch size",
        });
    }
    let Some(oldest) = episodes.front() else {
        return Err(ReplayError::EmptyBuffer {
            batch_size,
            what: "transitions",
        });
    };
    let obs_dim = spec.obs_dim;
    let action_width = spec.action_width();
    let mut batch = TransitionBatch {
        batch_size,
        obs_dim,
        action_width,
        obs: Vec::with_capacity(batch_size * obs_dim),
        actions: Vec::with_capacity(batch_size * action_width),
        rewards: Vec::with_capacity(batch_size),
        next_obs: Vec::with_capacity(batch_size * obs_dim),
        terminated: Vec::with_capacity(batch_size),
    };
    let first_live_transition = oldest.first_transition;
    for _ in 0..batch_size {
        // One draw over the global transition numbering, then a binary search for the
        // episode holding it: uniform over transitions, not over episodes.
        let global_transition = first_live_transition + rng.random_range(0..n_transitions) as u64;
        let episode_index =
            episodes.partition_point(|stored| stored.first_transition <= global_transition) - 1;
        let stored = &episodes[episode_index];
        let step = (global_transition - stored.first_transition) as usize;
        let episode = &stored.episode;
        batch
            .obs
            .extend_from_slice(episode.observation(obs_dim, step));
        batch
            .actions
            .extend_from_slice(episode.action(action_width, step));
        batch.rewards.push(episode.rewards[step]);
        batch
            .next_obs
            .extend_from_slice(episode.observation(obs_dim, step + 1));
        let is_terminal_transition = episode.terminated && step + 1 == episode.len();
        batch
            .terminated
            .push(f32::from(u8::from(is_terminal_transition)));
    }
    Ok(batch)
}

/// Draws `batch_size` sequences of `seq_len` steps (see [`SequenceMode`]).
pub(crate) fn sample_sequences<R: Rng + ?Sized>(
    rng: &mut R,
    spec: &ReplaySpec,
    episodes: &VecDeque<StoredEpisode>,
    n_transitions: usize,
    batch_size: usize,
    seq_len: usize,
    mode: SequenceMode,
) -> Result<SequenceBatch> {
    if batch_size == 0 {
        return Err(ReplayError::ZeroSampleSize {
            what: "the batch size",
        });
    }
    if seq_len == 0 {
        return Err(ReplayError::ZeroSampleSize {
            what: "the sequence length",
        });
    }
    if episodes.is_empty() {
        return Err(ReplayError::EmptyBuffer {
            batch_size,
            what: "sequences",
        });
    }
    let obs_dim = spec.obs_dim;
    let action_width = spec.action_width();
    let steps = batch_size * seq_len;
    let mut batch = SequenceBatch {
        batch_size,
        seq_len,
        obs_dim,
        action_width,
        obs: Vec::with_capacity(steps * obs_dim),
        actions: Vec::with_capacity(steps * action_width),
        rewards: Vec::with_capacity(steps),
        is_first: Vec::with_capacity(steps),
        is_terminal: Vec::with_capacity(steps),
    };
    match mode {
        SequenceMode::WithinEpisodes => {
            // Cumulative window counts: episode i owns window numbers
            // [window_ends[i-1], window_ends[i]). Rebuilt per call because it depends on
            // seq_len; O(episodes), small next to filling the batch.
            let mut window_ends: Vec<(usize, u64)> = Vec::new();
            let mut total_windows = 0u64;
            for (episode_index, stored) in episodes.iter().enumerate() {
                let observations = stored.episode.n_observations();
                if observations >= seq_len {
                    total_windows += (observations - seq_len + 1) as u64;
                    window_ends.push((episode_index, total_windows));
                }
            }
            if total_windows == 0 {
                let longest_episode_observations = episodes
                    .iter()
                    .map(|stored| stored.episode.n_observations())
                    .max()
                    .unwrap_or(0);
                return Err(ReplayError::NoEpisodeLongEnough {
                    seq_len,
                    longest_episode_observations,
                });
            }
            for _ in 0..batch_size {
                let window = rng.random_range(0..total_windows);
                let position = window_ends.partition_point(|(_, end)| *end <= window);
                let (episode_index, end) = window_ends[position];
                let episode = &episodes[episode_index].episode;
                let windows_in_episode = (episode.n_observations() - seq_len + 1) as u64;
                let start_step = (window - (end - windows_in_episode)) as usize;
                for step in start_step..start_step + seq_len {
                    push_step(&mut batch, spec, episode, step);
                }
            }
        }
        SequenceMode::Straddle => {
            let stored_observations = n_transitions + episodes.len();
            if stored_observations < seq_len {
                return Err(ReplayError::NotEnoughObservations {
                    seq_len,
                    stored_observations,
                });
            }
            let first_live_observation = episodes[0].first_observation;
            let window_starts = stored_observations - seq_len + 1;
            for _ in 0..batch_size {
                let global_observation =
                    first_live_observation + rng.random_range(0..window_starts) as u64;
                let mut episode_index = episodes
                    .partition_point(|stored| stored.first_observation <= global_observation)
                    - 1;
                let mut step =
                    (global_observation - episodes[episode_index].first_observation) as usize;
                for _ in 0..seq_len {
                    let episode = &episodes[episode_index].episode;
                    if step == episode.n_observations() {
                        // The window start guarantees enough observations remain, so a
                        // next episode exists whenever this one is exhausted.
                        episode_index += 1;
                        step = 0;
                    }
                    push_step(&mut batch, spec, &episodes[episode_index].episode, step);
                    step += 1;
                }
            }
        }
    }
    Ok(batch)
}

/// Appends step `step` (observation index `0 ..= T`) of `episode` in Dreamer alignment.
fn push_step(batch: &mut SequenceBatch, spec: &ReplaySpec, episode: &Episode, step: usize) {
    let action_width = spec.action_width();
    batch
        .obs
        .extend_from_slice(episode.observation(spec.obs_dim, step));
    if step == 0 {
        batch.actions.extend(std::iter::repeat_n(0.0, action_width));
        batch.rewards.push(0.0);
        batch.is_first.push(1.0);
    } else {
        batch
            .actions
            .extend_from_slice(episode.action(action_width, step - 1));
        batch.rewards.push(episode.rewards[step - 1]);
        batch.is_first.push(0.0);
    }
    let is_terminal = episode.terminated && step == episode.len();
    batch.is_terminal.push(f32::from(u8::from(is_terminal)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::ReplayBuffer;
    use crate::episode::EpisodeBuilder;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use wm_envs::Space;

    /// obs_dim 2: observation `[label, step]`; Box actions of width 2.
    fn spec() -> ReplaySpec {
        ReplaySpec::new(
            2,
            Space::Box {
                low: vec![-10.0; 2],
                high: vec![10.0; 2],
            },
        )
    }

    /// Episode `label` with `transitions` steps: o_k = [label, k], a_k = [label, k + 0.5],
    /// r_k = label * 100 + k.
    fn labelled_episode(label: usize, transitions: usize, terminated: bool) -> Episode {
        let spec = spec();
        let label = label as f32;
        let mut builder = EpisodeBuilder::new(&spec, &[label, 0.0]).expect("valid first obs");
        for step in 0..transitions {
            let step = step as f32;
            builder
                .push(
                    &[label, step + 0.5],
                    label * 100.0 + step,
                    &[label, step + 1.0],
                )
                .expect("valid step");
        }
        builder.finish(terminated, !terminated).expect("non-empty")
    }

    fn buffer_with(episodes: &[(usize, bool)]) -> ReplayBuffer {
        let mut buffer = ReplayBuffer::new(spec(), 10_000).expect("valid");
        for (label, (transitions, terminated)) in episodes.iter().enumerate() {
            buffer
                .insert(labelled_episode(label, *transitions, *terminated))
                .expect("fits");
        }
        buffer
    }

    #[test]
    fn sampling_is_reproducible_with_the_same_seed() {
        let buffer = buffer_with(&[(7, true), (3, false), (12, true)]);
        let first = buffer
            .sample_transitions(&mut ChaCha8Rng::seed_from_u64(42), 64)
            .expect("non-empty");
        let second = buffer
            .sample_transitions(&mut ChaCha8Rng::seed_from_u64(42), 64)
            .expect("non-empty");
        let other = buffer
            .sample_transitions(&mut ChaCha8Rng::seed_from_u64(43), 64)
            .expect("non-empty");
        assert_eq!(first, second);
        assert_ne!(
            first, other,
            "a different seed should give a different batch"
        );
        for mode in [SequenceMode::WithinEpisodes, SequenceMode::Straddle] {
            let first = buffer
                .sample_sequences(&mut ChaCha8Rng::seed_from_u64(5), 8, 4, mode)
                .expect("long enough");
            let second = buffer
                .sample_sequences(&mut ChaCha8Rng::seed_from_u64(5), 8, 4, mode)
                .expect("long enough");
            assert_eq!(first, second, "{mode:?}");
        }
    }

    #[test]
    fn transition_batch_fields_are_consistent() {
        let buffer = buffer_with(&[(4, true), (6, false)]);
        let batch = buffer
            .sample_transitions(&mut ChaCha8Rng::seed_from_u64(1), 200)
            .expect("non-empty");
        assert_eq!(
            (batch.batch_size, batch.obs_dim, batch.action_width),
            (200, 2, 2)
        );
        assert_eq!(batch.obs.len(), 400);
        assert_eq!(batch.next_obs.len(), 400);
        assert_eq!(batch.actions.len(), 400);
        assert_eq!(batch.rewards.len(), 200);
        assert_eq!(batch.terminated.len(), 200);
        let mut saw_terminal = false;
        for row in 0..200 {
            let (label, step) = (batch.obs[2 * row], batch.obs[2 * row + 1]);
            assert_eq!(&batch.next_obs[2 * row..2 * row + 2], &[label, step + 1.0]);
            assert_eq!(&batch.actions[2 * row..2 * row + 2], &[label, step + 0.5]);
            assert_eq!(batch.rewards[row], label * 100.0 + step);
            // Only episode 0 (4 steps) is terminated; its last transition starts at step 3.
            let expected_terminal = label == 0.0 && step == 3.0;
            assert_eq!(
                batch.terminated[row],
                if expected_terminal { 1.0 } else { 0.0 },
                "row {row}"
            );
            saw_terminal |= expected_terminal;
        }
        assert!(
            saw_terminal,
            "200 draws over 10 transitions should hit the terminal one"
        );
    }

    #[test]
    fn uniform_sampling_covers_all_transitions() {
        // Very unequal episodes: sampling episodes first would give the 1-step episode a
        // third of the draws instead of a sixteenth.
        let buffer = buffer_with(&[(1, true), (5, false), (10, true)]);
        let draws = 160_000;
        let batch = buffer
            .sample_transitions(&mut ChaCha8Rng::seed_from_u64(9), draws)
            .expect("non-empty");
        let mut counts = std::collections::HashMap::<(u32, u32), usize>::new();
        for row in 0..draws {
            let key = (batch.obs[2 * row] as u32, batch.obs[2 * row + 1] as u32);
            *counts.entry(key).or_default() += 1;
        }
        assert_eq!(counts.len(), 16, "every stored transition should be drawn");
        let expected = draws as f64 / 16.0; // 10_000, standard deviation about 97
        for (transition, count) in counts {
            let relative_error = (count as f64 - expected).abs() / expected;
            assert!(
                relative_error < 0.1,
                "transition {transition:?} drawn {count} times, expected about {expected}"
            );
        }
    }

    #[test]
    fn sampling_an_empty_buffer_names_the_batch_size() {
        let buffer = ReplayBuffer::new(spec(), 10).expect("valid");
        let error = buffer
            .sample_transitions(&mut ChaCha8Rng::seed_from_u64(0), 256)
            .expect_err("empty");
        assert_eq!(
            error.to_string(),
            "cannot sample 256 transitions: the buffer is empty"
        );
        let error = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(0),
                16,
                50,
                SequenceMode::Straddle,
            )
            .expect_err("empty");
        assert_eq!(
            error.to_string(),
            "cannot sample 16 sequences: the buffer is empty"
        );
        let buffer = buffer_with(&[(3, true)]);
        assert!(
            buffer
                .sample_transitions(&mut ChaCha8Rng::seed_from_u64(0), 0)
                .is_err()
        );
        assert!(
            buffer
                .sample_sequences(
                    &mut ChaCha8Rng::seed_from_u64(0),
                    1,
                    0,
                    SequenceMode::Straddle
                )
                .is_err()
        );
    }

    #[test]
    fn sequence_alignment_matches_dreamer_convention() {
        let spec = ReplaySpec::new(1, Space::Discrete { n: 2 });
        let mut builder = EpisodeBuilder::new(&spec, &[10.0]).expect("valid");
        builder.push(&[1.0], 0.5, &[11.0]).expect("valid");
        builder.push(&[0.0], 1.5, &[12.0]).expect("valid");
        builder.push(&[1.0], 2.5, &[13.0]).expect("valid");
        let mut buffer = ReplayBuffer::new(spec, 100).expect("valid");
        buffer
            .insert(builder.finish(true, false).expect("3 steps"))
            .expect("fits");

        // 4 observations and seq_len 4: the only window is the whole episode.
        let batch = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(3),
                2,
                4,
                SequenceMode::WithinEpisodes,
            )
            .expect("long enough");
        let expected_one = |values: [f32; 4]| [values, values].concat();
        assert_eq!(batch.obs, expected_one([10.0, 11.0, 12.0, 13.0]));
        assert_eq!(batch.actions, expected_one([0.0, 1.0, 0.0, 1.0]));
        assert_eq!(batch.rewards, expected_one([0.0, 0.5, 1.5, 2.5]));
        assert_eq!(batch.is_first, expected_one([1.0, 0.0, 0.0, 0.0]));
        assert_eq!(batch.is_terminal, expected_one([0.0, 0.0, 0.0, 1.0]));

        // A window that starts mid-episode has no is_first and carries the real action.
        let batch = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(3),
                64,
                2,
                SequenceMode::WithinEpisodes,
            )
            .expect("long enough");
        for row in 0..64 {
            let obs = &batch.obs[2 * row..2 * row + 2];
            let expected_is_first = if obs[0] == 10.0 { 1.0 } else { 0.0 };
            assert_eq!(batch.is_first[2 * row], expected_is_first);
            assert_eq!(batch.is_first[2 * row + 1], 0.0);
            let arrival_step = (obs[1] - 10.0) as usize; // obs[1] = o_k with k >= 1
            assert_eq!(
                batch.rewards[2 * row + 1],
                [0.5, 1.5, 2.5][arrival_step - 1]
            );
            assert_eq!(
                batch.actions[2 * row + 1],
                [1.0, 0.0, 1.0][arrival_step - 1]
            );
        }
    }

    #[test]
    fn truncated_episode_has_no_terminal_step() {
        let buffer = buffer_with(&[(3, false)]);
        let batch = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(0),
                4,
                4,
                SequenceMode::WithinEpisodes,
            )
            .expect("long enough");
        assert!(batch.is_terminal.iter().all(|value| *value == 0.0));
        let batch = buffer
            .sample_transitions(&mut ChaCha8Rng::seed_from_u64(0), 50)
            .expect("non-empty");
        assert!(batch.terminated.iter().all(|value| *value == 0.0));
    }

    #[test]
    fn sequences_never_straddle_episodes_within_episodes_mode() {
        let buffer = buffer_with(&[(9, true), (2, true), (5, false), (12, true), (4, false)]);
        let seq_len = 5;
        let batch = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(11),
                500,
                seq_len,
                SequenceMode::WithinEpisodes,
            )
            .expect("long enough");
        assert_eq!(batch.obs.len(), 500 * seq_len * 2);
        let mut labels_seen = std::collections::HashSet::new();
        for row in 0..500 {
            let steps = &batch.obs[row * seq_len * 2..(row + 1) * seq_len * 2];
            let label = steps[0];
            labels_seen.insert(label as u32);
            for t in 0..seq_len {
                assert_eq!(steps[2 * t], label, "row {row} mixes episodes");
                assert_eq!(
                    steps[2 * t + 1],
                    steps[1] + t as f32,
                    "row {row} is not consecutive"
                );
                if t > 0 {
                    assert_eq!(batch.is_first[row * seq_len + t], 0.0);
                }
            }
        }
        // Episode 1 has 3 observations < seq_len 5 and must never appear.
        assert!(!labels_seen.contains(&1));
        assert_eq!(labels_seen, [0, 2, 3, 4].into_iter().collect());
    }

    #[test]
    fn within_episode_windows_are_equally_likely() {
        // Episode 0: 4 observations → 2 windows of 3; episode 1: 10 observations → 8 windows.
        let buffer = buffer_with(&[(3, true), (9, true)]);
        let draws = 100_000;
        let batch = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(2),
                draws,
                3,
                SequenceMode::WithinEpisodes,
            )
            .expect("long enough");
        let mut counts = std::collections::HashMap::<(u32, u32), usize>::new();
        for row in 0..draws {
            let key = (batch.obs[row * 6] as u32, batch.obs[row * 6 + 1] as u32);
            *counts.entry(key).or_default() += 1;
        }
        assert_eq!(counts.len(), 10);
        for (window, count) in counts {
            let relative_error = (count as f64 - 10_000.0).abs() / 10_000.0;
            assert!(
                relative_error < 0.1,
                "window {window:?} drawn {count} times, expected about 10000"
            );
        }
    }

    #[test]
    fn no_long_enough_episode_names_seq_len_and_longest_episode() {
        let buffer = buffer_with(&[(20, true), (8, false)]);
        let error = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(0),
                16,
                50,
                SequenceMode::WithinEpisodes,
            )
            .expect_err("no episode has 50 observations");
        assert!(
            matches!(
                error,
                ReplayError::NoEpisodeLongEnough {
                    seq_len: 50,
                    longest_episode_observations: 21
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("Straddle"), "{error}");
        // The same buffer gives 25-step sequences when straddling (29 + 1 ... observations).
        buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(0),
                16,
                25,
                SequenceMode::Straddle,
            )
            .expect("30 observations in total");
        let error = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(0),
                16,
                31,
                SequenceMode::Straddle,
            )
            .expect_err("only 30 observations");
        assert!(
            error.to_string().contains("only 30 observations"),
            "{error}"
        );
    }

    #[test]
    fn straddle_mode_marks_is_first_at_boundaries() {
        // Short episodes, like CartPole under a random policy, still give long sequences.
        let episodes: Vec<(usize, bool)> = (0..30)
            .map(|label| (1 + label % 4, label % 5 != 0))
            .collect();
        let buffer = buffer_with(&episodes);
        let seq_len = 12;
        let batch = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(4),
                300,
                seq_len,
                SequenceMode::Straddle,
            )
            .expect("enough observations");
        let mut boundaries_seen = 0;
        for row in 0..300 {
            for t in 0..seq_len {
                let index = row * seq_len + t;
                let (label, step) = (batch.obs[2 * index], batch.obs[2 * index + 1]);
                let (transitions, terminated) = episodes[label as usize];
                assert_eq!(
                    batch.is_first[index],
                    if step == 0.0 { 1.0 } else { 0.0 },
                    "row {row} t {t}"
                );
                let expected_terminal = terminated && step as usize == transitions;
                assert_eq!(
                    batch.is_terminal[index],
                    if expected_terminal { 1.0 } else { 0.0 }
                );
                if step == 0.0 {
                    assert_eq!(&batch.actions[2 * index..2 * index + 2], &[0.0, 0.0]);
                    assert_eq!(batch.rewards[index], 0.0);
                } else {
                    assert_eq!(
                        &batch.actions[2 * index..2 * index + 2],
                        &[label, step - 0.5]
                    );
                    assert_eq!(batch.rewards[index], label * 100.0 + step - 1.0);
                }
                if t > 0 {
                    let previous = index - 1;
                    let (previous_label, previous_step) =
                        (batch.obs[2 * previous], batch.obs[2 * previous + 1]);
                    if step == 0.0 {
                        // A new episode follows the previous one's last observation.
                        boundaries_seen += 1;
                        assert_eq!(label, previous_label + 1.0);
                        assert_eq!(previous_step as usize, episodes[previous_label as usize].0);
                    } else {
                        assert_eq!((label, step), (previous_label, previous_step + 1.0));
                    }
                }
            }
        }
        assert!(
            boundaries_seen > 300,
            "windows of 12 over episodes of 2-5 observations should cross boundaries"
        );
    }

    #[test]
    fn straddle_windows_respect_eviction() {
        let mut buffer = ReplayBuffer::new(spec(), 10).expect("valid");
        for label in 0..7 {
            buffer
                .insert(labelled_episode(label, 3, true))
                .expect("fits");
        }
        // Live: episodes 4, 5, 6 (9 transitions, 12 observations).
        assert_eq!(buffer.n_observations(), 12);
        let batch = buffer
            .sample_sequences(
                &mut ChaCha8Rng::seed_from_u64(8),
                200,
                12,
                SequenceMode::Straddle,
            )
            .expect("exactly one window");
        for row in 0..200 {
            let first_label = batch.obs[row * 24];
            let last_label = batch.obs[row * 24 + 22];
            assert_eq!((first_label, last_label), (4.0, 6.0));
        }
        let batch = buffer
            .sample_transitions(&mut ChaCha8Rng::seed_from_u64(8), 500)
            .expect("non-empty");
        assert!(
            batch.obs.chunks_exact(2).all(|obs| obs[0] >= 4.0),
            "evicted episodes must not be sampled"
        );
    }
}
