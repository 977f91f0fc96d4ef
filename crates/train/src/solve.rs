//! The multi-seed control benchmark behind `wm bench solve`: each seed's evaluation return
//! against environment steps (read back from the run's TensorBoard events), whether and when it
//! reached the target, a Markdown table and a PNG of the curves with their spread across seeds.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::plot::PlotError;
use crate::tensorboard::{EventFileError, read_scalars};

/// The tag the trainer logs policy evaluations under (x = environment steps).
pub const RETURN_TAG: &str = "eval/return";

/// How many evaluations in a row, through the end of the run, make a target *held*
/// ([`SeedCurve::first_holding`]).
pub const HOLD_EVALS: usize = 3;

/// One seed's evaluation curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedCurve {
    /// The training seed.
    pub seed: u64,
    /// `(environment steps, mean evaluation return)`, by environment steps; when several
    /// evaluations share a step, the last one logged.
    pub points: Vec<(u64, f64)>,
    /// Wall-clock seconds of the whole run (collection, training and evaluation).
    pub wall_seconds: f64,
    /// The run folder.
    pub run: String,
}

impl SeedCurve {
    /// Reads the `eval/return` points of the run in `run_dir`.
    ///
    /// # Errors
    /// If the event files cannot be read or are corrupt.
    pub fn from_run(seed: u64, run_dir: &Path, wall_seconds: f64) -> Result<Self, EventFileError> {
        let mut points: Vec<(u64, f64)> = Vec::new();
        for event in read_scalars(run_dir)?
            .into_iter()
            .filter(|e| e.tag == RETURN_TAG)
        {
            let step = event.step.max(0) as u64;
            match points.iter_mut().find(|(s, _)| *s == step) {
                Some(point) => point.1 = f64::from(event.value),
                None => points.push((step, f64::from(event.value))),
            }
        }
        points.sort_by_key(|p| p.0);
        Ok(Self {
            seed,
            points,
            wall_seconds,
            run: run_dir.display().to_string(),
        })
    }

    /// The last evaluation at or before `steps` environment steps.
    pub fn return_at(&self, steps: u64) -> Option<f64> {
        self.points
            .iter()
            .take_while(|p| p.0 <= steps)
            .last()
            .map(|p| p.1)
    }

    /// The environment steps of the first evaluation that reached `target`.
    pub fn first_reaching(&self, target: f64) -> Option<u64> {
        self.points.iter().find(|p| p.1 >= target).map(|p| p.0)
    }

    /// The environment steps of the first evaluation from which the target is *held*: it and
    /// every later evaluation up to `until` environment steps reached `target`, and at least
    /// `min_evals` evaluations make up that stretch (so one lucky evaluation just before the end
    /// does not count). `None` when no such stretch exists.
    pub fn first_holding(&self, target: f64, until: u64, min_evals: usize) -> Option<u64> {
        let within: Vec<(u64, f64)> = self
            .points
            .iter()
            .copied()
            .take_while(|p| p.0 <= until)
            .collect();
        // The held stretch is a suffix of the evaluations within `until`: find where it starts.
        let start = within
            .iter()
            .rposition(|p| p.1 < target)
            .map_or(0, |i| i + 1);
        (within.len() - start >= min_evals.max(1)).then(|| within[start].0)
    }
}

/// The benchmark's result over all seeds.
#[derive(Debug, Clone, Serialize)]
pub struct SolveReport {
    /// What was run (the config file and overrides).
    pub setup: String,
    /// The target return.
    pub target: f64,
    /// The environment-step budget for reaching it.
    pub budget: u64,
    /// One curve per seed.
    pub seeds: Vec<SeedCurve>,
}

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

impl SolveReport {
    /// Seeds whose last evaluation within the budget reached the target.
    pub fn solved(&self) -> usize {
        self.seeds
            .iter()
            .filter(|s| s.return_at(self.budget).is_some_and(|r| r >= self.target))
            .count()
    }

    /// The environment steps from which `seed` holds the target ([`HOLD_EVALS`] evaluations or
    /// more, through the end of its run).
    pub fn held_from(&self, seed: &SeedCurve) -> Option<u64> {
        let end = seed.points.last().map_or(0, |p| p.0);
        seed.first_holding(self.target, end, HOLD_EVALS)
    }

    /// Seeds that hold the target from a step within the budget.
    pub fn solved_and_held(&self) -> usize {
        self.seeds
            .iter()
            .filter(|s| self.held_from(s).is_some_and(|x| x <= self.budget))
            .count()
    }

    /// The Markdown table: one row per seed, then the mean and standard deviation.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "{}\n\ntarget: mean evaluation return >= {} within {} environment steps; solved by {} of {} seeds \
             (last evaluation within the budget); held by {} (the target reached within the budget and \
             kept at every evaluation after it, {} or more, to the end of the run)\n\n",
            self.setup,
            self.target,
            self.budget,
            self.solved(),
            self.seeds.len(),
            self.solved_and_held(),
            HOLD_EVALS,
        );
        out.push_str("| seed | return at the budget | best return (at env steps) | first reached target at | held from | final return (env steps) | wall time |\n");
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
        let fmt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.1}"));
        for s in &self.seeds {
            let best = s.points.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
            let last = s.points.last();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.0} s |\n",
                s.seed,
                fmt(s.return_at(self.budget)),
                best.map_or("–".into(), |(x, r)| format!("{r:.1} ({x})")),
                s.first_reaching(self.target)
                    .map_or("not reached".into(), |x| x.to_string()),
                self.held_from(s)
                    .map_or("not held".into(), |x| x.to_string()),
                last.map_or("–".into(), |(x, r)| format!("{r:.1} ({x})")),
                s.wall_seconds
            ));
        }
        let at_budget: Vec<f64> = self
            .seeds
            .iter()
            .filter_map(|s| s.return_at(self.budget))
            .collect();
        let (mean, std) = mean_std(&at_budget);
        let (wall, _) = mean_std(
            &self
                .seeds
                .iter()
                .map(|s| s.wall_seconds)
                .collect::<Vec<_>>(),
        );
        out.push_str(&format!(
            "| mean ± std | {mean:.1} ± {std:.1} | | | | | {wall:.0} s |\n"
        ));
        out
    }

    /// The mean curve and the range across seeds on a grid of environment steps (each seed's
    /// value at `x` is its last evaluation at or before `x`; seeds not yet evaluated at `x` are
    /// left out): `(x, mean, min, max)`.
    pub fn spread(&self, points: usize) -> Vec<(u64, f64, f64, f64)> {
        let first = self
            .seeds
            .iter()
            .filter_map(|s| s.points.first().map(|p| p.0))
            .min();
        let last = self
            .seeds
            .iter()
            .filter_map(|s| s.points.last().map(|p| p.0))
            .max();
        let (Some(first), Some(last)) = (first, last) else {
            return Vec::new();
        };
        let n = points.max(2) as u64;
        (0..n)
            .map(|i| first + (last - first) * i / (n - 1))
            .filter_map(|x| {
                let values: Vec<f64> = self.seeds.iter().filter_map(|s| s.return_at(x)).collect();
                (!values.is_empty()).then(|| {
                    let (mean, _) = mean_std(&values);
                    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (x, mean, lo, hi)
                })
            })
            .collect()
    }

    /// Draws the curves to a PNG: each seed thin, the mean across seeds thick, the range across
    /// seeds shaded, the target and the budget dashed.
    ///
    /// # Errors
    /// [`PlotError`] when drawing or writing fails.
    pub fn plot(&self, title: &str, path: &Path) -> Result<(), PlotError> {
        let fail = |message: String| PlotError {
            path: path.display().to_string(),
            message,
        };
        crate::plot::register_font();
        let all: Vec<(u64, f64)> = self
            .seeds
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .collect();
        if all.is_empty() {
            return Err(fail(
                "no seed has an evaluation to plot (eval.policy_episodes = 0?)".into(),
            ));
        }
        let x_max = all.iter().map(|p| p.0).max().unwrap_or(1).max(self.budget) as f64 * 1.03;
        let (lo, hi) = all
            .iter()
            .map(|p| p.1)
            .chain([self.target])
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
        let pad = ((hi - lo) * 0.08).max(1.0);
        let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("environment steps")
            .y_desc("mean evaluation return")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        let spread = self.spread(200);
        let band: Vec<(f64, f64)> = spread
            .iter()
            .map(|p| (p.0 as f64, p.3))
            .chain(spread.iter().rev().map(|p| (p.0 as f64, p.2)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(
                band,
                RGBColor(120, 160, 230).mix(0.3),
            )))
            .map_err(|e| fail(e.to_string()))?;
        let palette = [
            RGBColor(230, 120, 80),
            RGBColor(90, 170, 90),
            RGBColor(160, 110, 200),
            RGBColor(200, 170, 60),
            RGBColor(90, 180, 200),
        ];
        for (i, s) in self.seeds.iter().enumerate() {
            let color = palette[i % palette.len()];
            let line: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0 as f64, p.1)).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(1)))
                .map_err(|e| fail(e.to_string()))?
                .label(format!("seed {}", s.seed))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| fail(e.to_string()))?;
        }
        let mean: Vec<(f64, f64)> = spread.iter().map(|p| (p.0 as f64, p.1)).collect();
        chart
            .draw_series(LineSeries::new(mean, BLUE.stroke_width(3)))
            .map_err(|e| fail(e.to_string()))?
            .label("mean across seeds (band: min to max)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(3)));
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, self.target), (x_max, self.target)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| fail(e.to_string()))?
            .label(format!("target {}", self.target))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        chart
            .draw_series(DashedLineSeries::new(
                vec![
                    (self.budget as f64, lo - pad),
                    (self.budget as f64, hi + pad),
                ],
                6,
                4,
                RED.stroke_width(1),
            ))
            .map_err(|e| fail(e.to_string()))?
            .label(format!("budget {} steps", self.budget))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(seed: u64, points: &[(u64, f64)]) -> SeedCurve {
        SeedCurve {
            seed,
            points: points.to_vec(),
            wall_seconds: 10.0,
            run: format!("run{seed}"),
        }
    }

    fn report() -> SolveReport {
        SolveReport {
            setup: "test".into(),
            target: -200.0,
            budget: 3000,
            seeds: vec![
                curve(
                    0,
                    &[
                        (1000, -900.0),
                        (2000, -300.0),
                        (2900, -150.0),
                        (3500, -140.0),
                    ],
                ),
                curve(1, &[(1100, -1000.0), (2100, -250.0), (3100, -120.0)]),
            ],
        }
    }

    #[test]
    fn return_at_the_budget_is_the_last_evaluation_before_it_and_solved_counts_seeds() {
        let r = report();
        assert_eq!(r.seeds[0].return_at(3000), Some(-150.0));
        assert_eq!(
            r.seeds[1].return_at(3000),
            Some(-250.0),
            "the evaluation at 3100 is past the budget"
        );
        assert_eq!(r.seeds[1].return_at(500), None);
        assert_eq!(r.seeds[0].first_reaching(-200.0), Some(2900));
        assert_eq!(r.seeds[1].first_reaching(-200.0), Some(3100));
        assert_eq!(r.solved(), 1);
        let table = r.markdown();
        assert!(table.contains("solved by 1 of 2 seeds"), "{table}");
        assert!(table.contains("| mean ± std | -200.0 ± 70.7 |"), "{table}");
    }

    #[test]
    fn a_target_is_held_only_by_a_final_stretch_of_enough_evaluations() {
        let seed = curve(
            0,
            &[
                (100, -900.0),
                (200, -150.0), // reached, then lost at 300
                (300, -400.0),
                (400, -190.0),
                (500, -180.0),
                (600, -170.0),
                (700, -500.0), // past `until` below: ignored
            ],
        );
        assert_eq!(seed.first_reaching(-200.0), Some(200));
        assert_eq!(seed.first_holding(-200.0, 600, 3), Some(400));
        assert_eq!(seed.first_holding(-200.0, 600, 4), None, "only 3 in a row");
        assert_eq!(seed.first_holding(-200.0, 700, 1), None, "lost at the end");
        assert_eq!(seed.first_holding(-200.0, 250, 1), Some(200));
        assert_eq!(seed.first_holding(-200.0, 50, 1), None, "no evaluation yet");
    }

    #[test]
    fn the_table_counts_seeds_that_hold_the_target_within_the_budget() {
        let mut r = report();
        // Seed 0 reaches at 2900 and holds through 3500 with 3 evaluations.
        r.seeds[0].points.push((3600, -130.0));
        assert_eq!(r.held_from(&r.seeds[0]), Some(2900));
        // Seed 1 holds from 3100 only: past the budget, and only 1 evaluation.
        assert_eq!(r.held_from(&r.seeds[1]), None);
        assert_eq!(r.solved_and_held(), 1);
        let table = r.markdown();
        assert!(table.contains("held by 1"), "{table}");
        assert!(table.contains("| 2900 | 2900 |"), "{table}");
        assert!(table.contains("not held"), "{table}");
    }

    #[test]
    fn spread_takes_each_seeds_latest_value_and_skips_seeds_not_yet_evaluated() {
        let spread = report().spread(6);
        assert_eq!(
            spread.first(),
            Some(&(1000, -900.0, -900.0, -900.0)),
            "only seed 0 is evaluated at 1000"
        );
        let at_3500 = spread.last().copied().expect("points");
        assert_eq!(at_3500, (3500, -130.0, -140.0, -120.0));
    }

    #[test]
    fn plot_writes_a_png() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("solve.png");
        report().plot("test", &path).expect("plot");
        let bytes = std::fs::read(&path).expect("png written");
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        let empty = SolveReport {
            seeds: vec![curve(0, &[])],
            ..report()
        };
        let error = empty.plot("test", &path).unwrap_err();
        assert!(
            error.to_string().contains("no seed has an evaluation"),
            "{error}"
        );
    }
}
