//! Imagined against real trajectories: one panel per (observation dimension, held-out episode).
//! Each model sees the first `CONTEXT_STEPS` observations (observe 5, predict the rest, as PlaNet and Dreamer plot) and then
//! imagines under the true actions. The real trajectory is black, the model's mean/mode rollout
//! red, a few sampled rollouts light red (so a sample model's spread shows), and a second model
//! for comparison blue.

use std::path::Path;

use plotters::prelude::*;
use wm_replay::{Episode, ReplayBuffer};

use crate::eval::{CONTEXT_STEPS, imagine_from_context};
use crate::model::AnyModel;

/// Sampled rollouts drawn per episode besides the mean rollout.
const SAMPLED_ROLLOUTS: usize = 5;
const PANEL_WIDTH: u32 = 360;
const PANEL_HEIGHT: u32 = 200;

/// Errors while drawing.
#[derive(Debug, thiserror::Error)]
#[error("plotting to {path}: {message}")]
pub struct PlotError {
    /// The image file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Registers the embedded font as `sans-serif` (once per process).
pub fn register_font() {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        // Registering the embedded font cannot fail for a valid TTF; a failure shows as missing labels.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// A named curve of `(x, y)` points.
pub type Curve = (String, Vec<(f64, f64)>);

/// Named curves `(x, y)` side by side in panels that share the series: for each panel
/// `(x label, series)`, one line per series in a fixed palette, the legend in the first panel.
/// The y range is that of the data (NaN points are skipped), clipped to `y_clip` when given.
///
/// # Errors
/// [`PlotError`] when there is nothing to draw or drawing or writing fails.
pub fn plot_curves(
    title: &str,
    y_desc: &str,
    panels: &[(&str, Vec<Curve>)],
    y_clip: Option<(f64, f64)>,
    path: &Path,
) -> Result<(), PlotError> {
    let fail = |message: String| PlotError {
        path: path.display().to_string(),
        message,
    };
    register_font();
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = panels
        .iter()
        .flat_map(|(_, series)| series.iter().flat_map(|(_, pts)| pts.iter().filter(finite)))
        .copied()
        .collect();
    if panels.is_empty() || all.is_empty() {
        return Err(fail("no finite point to plot".into()));
    }
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
    if let Some((clip_lo, clip_hi)) = y_clip {
        (lo, hi) = (lo.max(clip_lo), hi.min(clip_hi));
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let width = 700 * panels.len() as u32;
    let root = BitMapBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| fail(e.to_string()))?;
    let areas = root.split_evenly((1, panels.len()));
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 0),
        RGBColor(120, 120, 255),
    ];
    for (i, ((x_desc, series), area)) in panels.iter().zip(&areas).enumerate() {
        let x_max = series
            .iter()
            .flat_map(|(_, pts)| pts.iter().filter(finite).map(|p| p.0))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max * 1.02, (lo - pad)..(hi + pad))
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(*x_desc)
            .y_desc(y_desc)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        for (j, (name, pts)) in series.iter().enumerate() {
            let color = palette[j % palette.len()];
            let dashed = j >= palette.len();
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter(finite)
                .map(|p| (p.0, p.1.clamp(lo - pad, hi + pad)))
                .collect();
            let drawn = chart
                .draw_series(LineSeries::new(
                    line,
                    color.stroke_width(if dashed { 1 } else { 2 }),
                ))
                .map_err(|e| fail(e.to_string()))?;
            if i == 0 {
                drawn
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
        }
        if i == 0 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Draws `model` (and `compare`, if given) against the `n_episodes` longest held-out episodes,
/// at most `horizon` imagined steps each, to a PNG at `path`. Returns the image size.
pub fn plot_open_loop(
    model: &AnyModel,
    compare: Option<&AnyModel>,
    buffer: &ReplayBuffer,
    n_episodes: usize,
    horizon: usize,
    path: &Path,
    device: &wm_backend::Device,
) -> Result<(u32, u32), PlotError> {
    let fail = |message: String| PlotError {
        path: path.display().to_string(),
        message,
    };
    register_font();
    let spec = buffer.spec();
    let (o, a) = (spec.obs_dim, spec.action_width());
    let mut episodes: Vec<&Episode> = buffer
        .episodes()
        .filter(|e| e.len() >= CONTEXT_STEPS)
        .collect();
    episodes.sort_by_key(|e| std::cmp::Reverse(e.len()));
    episodes.truncate(n_episodes.max(1));
    if episodes.is_empty() {
        return Err(fail(format!(
            "the run has no held-out episode longer than {CONTEXT_STEPS} steps"
        )));
    }
    let start = CONTEXT_STEPS - 1;
    let steps = episodes
        .iter()
        .map(|e| e.len() - start)
        .max()
        .unwrap_or(1)
        .min(horizon);
    let mean = imagine_from_context(model, &episodes, steps, o, a, false, device).0;
    let samples: Vec<Vec<f32>> = (0..SAMPLED_ROLLOUTS)
        .map(|_| imagine_from_context(model, &episodes, steps, o, a, true, device).0)
        .collect();
    let other = compare.map(|m| imagine_from_context(m, &episodes, steps, o, a, false, device).0);

    let (width, height) = (
        PANEL_WIDTH * episodes.len() as u32,
        PANEL_HEIGHT * o as u32 + 24,
    );
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let legend = match compare {
        Some(other_model) => format!(
            "black: real   red: {} (mean)   light red: its samples   blue: {}",
            model.kind(),
            other_model.kind()
        ),
        None => format!(
            "black: real   red: {} (mean)   light red: its samples",
            model.kind()
        ),
    };
    let (title, body) = root.split_vertically(24);
    title
        .titled(
            &format!("{legend}; first {CONTEXT_STEPS} observations seen, then imagined"),
            ("sans-serif", 14),
        )
        .map_err(|e| fail(e.to_string()))?;
    let panels = body.split_evenly((o, episodes.len()));
    for (column, episode) in episodes.iter().enumerate() {
        let length = (episode.len() - start).min(steps);
        let imagined = |flat: &[f32], dim: usize| -> Vec<(f64, f64)> {
            std::iter::once((start as f64, f64::from(episode.observation(o, start)[dim])))
                .chain((0..length).map(|h| {
                    (
                        (start + h + 1) as f64,
                        f64::from(flat[(column * steps + h) * o + dim]),
                    )
                }))
                .collect()
        };
        for dim in 0..o {
            let real: Vec<(f64, f64)> = (0..=start + length)
                .map(|t| (t as f64, f64::from(episode.observation(o, t)[dim])))
                .collect();
            let mean_line = imagined(&mean, dim);
            let other_line = other.as_ref().map(|flat| imagined(flat, dim));
            let values = real
                .iter()
                .chain(&mean_line)
                .chain(other_line.iter().flatten())
                .map(|p| p.1)
                .filter(|v| v.is_finite());
            let (low, high) =
                values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let pad = ((high - low) * 0.1).max(1e-3);
            let panel = &panels[dim * episodes.len() + column];
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("episode {column}, obs[{dim}]"), ("sans-serif", 14))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..(start + length) as f64, (low - pad)..(high + pad))
                .map_err(|e| fail(e.to_string()))?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            for sample in &samples {
                chart
                    .draw_series(LineSeries::new(
                        imagined(sample, dim),
                        RGBColor(240, 170, 170),
                    ))
                    .map_err(|e| fail(e.to_string()))?;
            }
            chart
                .draw_series(LineSeries::new(real, BLACK.stroke_width(2)))
                .map_err(|e| fail(e.to_string()))?;
            if let Some(line) = other_line {
                chart
                    .draw_series(LineSeries::new(line, BLUE.stroke_width(2)))
                    .map_err(|e| fail(e.to_string()))?;
            }
            chart
                .draw_series(LineSeries::new(mean_line, RED.stroke_width(2)))
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok((width, height))
}
