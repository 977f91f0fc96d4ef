//! Short renderings of real episodes for `wm play`: one line of ASCII per step, or one PNG
//! frame per step, of the cart and pole (CartPole-v1 and its gusty variant) and of the pendulum
//! (Pendulum-v1 and the kicked one), drawn from the observations alone. Other environments get
//! their observation values in the ASCII line and no PNG.

use std::path::Path;

use plotters::prelude::*;
use wm_envs::Action;

use crate::plot::PlotError;

/// Cells of the ASCII track or dial.
const ASCII_CELLS: usize = 41;
/// CartPole's cart-position limit (m): the track drawn is `[-X_LIMIT, X_LIMIT]`.
const X_LIMIT: f32 = 2.4;
/// Below this pole angle (rad) the ASCII pole is drawn upright.
const UPRIGHT: f32 = 0.035;
/// PNG frame size in pixels.
const FRAME: (u32, u32) = (320, 200);

/// What a frame shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scene {
    /// Observation `[x, x_dot, theta, theta_dot]`: the cart on its track and the pole.
    CartPole,
    /// Observation `[cos theta, sin theta, theta_dot]` (theta = 0 upright): the pendulum.
    Pendulum,
    /// Any other environment: the observation's values.
    Values,
}

impl Scene {
    /// The scene of an environment by its Gymnasium-style id (`Env::id`).
    pub fn of(env_id: &str) -> Self {
        let id = env_id.to_ascii_lowercase();
        if id.contains("cartpole") {
            Self::CartPole
        } else if id.contains("pendulum") {
            Self::Pendulum
        } else {
            Self::Values
        }
    }

    /// Whether PNG frames can be drawn for this scene.
    pub fn has_png(self) -> bool {
        self != Self::Values
    }
}

/// The action as text: `1`, or `+0.52` per dimension.
pub fn action_text(action: &Action) -> String {
    match action {
        Action::Discrete(i) => i.to_string(),
        Action::Continuous(v) => v
            .iter()
            .map(|x| format!("{x:+.2}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The pendulum's angle from upright (rad, in `(-pi, pi]`) from `[cos, sin, ..]`.
fn pendulum_angle(obs: &[f32]) -> f32 {
    obs[1].atan2(obs[0])
}

/// The cell in `0..ASCII_CELLS` of `value` on the scale `[-limit, limit]`, clamped.
fn cell(value: f32, limit: f32) -> usize {
    let unit = ((value / limit).clamp(-1.0, 1.0) + 1.0) / 2.0;
    (unit * (ASCII_CELLS - 1) as f32).round() as usize
}

/// One line of ASCII for step `t`: the scene, then the numbers. `taken` is the action that led
/// to `obs` and its reward (`None` at the episode's start).
///
/// CartPole: `|.........[/].........|` is the track from -2.4 m to 2.4 m with the cart, and the
/// pole in it upright (`|`) or leaning right (`/`) or left (`\`). Pendulum: the dial from -pi
/// to pi with the bob `o` and the upright position `^` in the middle (positive angles lean
/// left, as Gymnasium draws them, so they are left of `^`).
pub fn ascii_line(scene: Scene, t: usize, obs: &[f32], taken: Option<(&Action, f64)>) -> String {
    let tail = match taken {
        Some((action, reward)) => format!(" a={} r={reward:+.3}", action_text(action)),
        None => " (reset)".to_string(),
    };
    let mut cells = vec!['.'; ASCII_CELLS];
    let numbers = match scene {
        Scene::CartPole => {
            let (x, theta) = (obs[0], obs[2]);
            let at = cell(x, X_LIMIT).clamp(1, ASCII_CELLS - 2);
            let pole = if theta.abs() < UPRIGHT {
                '|'
            } else if theta > 0.0 {
                '/'
            } else {
                '\\'
            };
            cells[at - 1] = '[';
            cells[at] = pole;
            cells[at + 1] = ']';
            format!("x={x:+.2} theta={theta:+.3}")
        }
        Scene::Pendulum => {
            let theta = pendulum_angle(obs);
            cells[ASCII_CELLS / 2] = '^';
            // Positive angles lean left: mirrored on the dial.
            cells[cell(-theta, std::f32::consts::PI)] = 'o';
            format!("theta={theta:+.2} theta_dot={:+.2}", obs[2])
        }
        Scene::Values => {
            cells.clear();
            format!(
                "obs=[{}]",
                obs.iter()
                    .map(|v| format!("{v:+.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let strip: String = cells.into_iter().collect();
    let strip = if strip.is_empty() {
        String::new()
    } else {
        format!("|{strip}| ")
    };
    format!("t={t:>4} {strip}{numbers}{tail}")
}

/// Draws one PNG frame of `obs` to `path` with `caption` above it.
///
/// # Errors
/// [`PlotError`] if the scene has no PNG ([`Scene::Values`]) or the file cannot be written.
pub fn png_frame(scene: Scene, obs: &[f32], caption: &str, path: &Path) -> Result<(), PlotError> {
    let fail = |message: String| PlotError {
        path: path.display().to_string(),
        message,
    };
    crate::plot::register_font();
    let (width, height) = FRAME;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    root.draw(&Text::new(
        caption.to_string(),
        (6, 4),
        ("sans-serif", 13).into_font(),
    ))
    .map_err(|e| fail(e.to_string()))?;
    let (w, h) = (f64::from(width), f64::from(height));
    match scene {
        Scene::CartPole => {
            // World: x in [-1.2 X_LIMIT, 1.2 X_LIMIT] across the width; the pole is 1 m
            // (twice CartPole's half-length) as Gymnasium draws it.
            let scale = w / (2.4 * f64::from(X_LIMIT));
            let px = |x: f64| (w / 2.0 + x * scale).round() as i32;
            let ground = (h * 0.75) as i32;
            let (x, theta) = (f64::from(obs[0]), f64::from(obs[2]));
            root.draw(&PathElement::new(
                vec![(0, ground), (width as i32, ground)],
                BLACK,
            ))
            .map_err(|e| fail(e.to_string()))?;
            for limit in [-f64::from(X_LIMIT), f64::from(X_LIMIT)] {
                root.draw(&PathElement::new(
                    vec![(px(limit), ground - 6), (px(limit), ground + 6)],
                    RED,
                ))
                .map_err(|e| fail(e.to_string()))?;
            }
            let (cart_w, cart_h) = (0.5 * scale, 0.3 * scale);
            let (cx, top) = (px(x), ground - cart_h as i32);
            root.draw(&Rectangle::new(
                [
                    (cx - (cart_w / 2.0) as i32, top),
                    (cx + (cart_w / 2.0) as i32, ground),
                ],
                BLACK.filled(),
            ))
            .map_err(|e| fail(e.to_string()))?;
            let pole = 1.0 * scale;
            let tip = (
                cx + (pole * theta.sin()).round() as i32,
                top - (pole * theta.cos()).round() as i32,
            );
            root.draw(&PathElement::new(
                vec![(cx, top), tip],
                RGBColor(202, 152, 101).stroke_width(6),
            ))
            .map_err(|e| fail(e.to_string()))?;
        }
        Scene::Pendulum => {
            let theta = f64::from(pendulum_angle(obs));
            let center = ((w / 2.0) as i32, (h / 2.0 + 8.0) as i32);
            let rod = h * 0.38;
            // Gymnasium draws the rod at theta + pi/2 from the x axis, y up.
            let tip = (
                center.0 - (rod * theta.sin()).round() as i32,
                center.1 - (rod * theta.cos()).round() as i32,
            );
            root.draw(&PathElement::new(
                vec![center, tip],
                RGBColor(204, 77, 77).stroke_width(8),
            ))
            .map_err(|e| fail(e.to_string()))?;
            root.draw(&Circle::new(center, 4, BLACK.filled()))
                .map_err(|e| fail(e.to_string()))?;
        }
        Scene::Values => {
            return Err(fail(
                "this environment has no picture; use --render ascii".into(),
            ));
        }
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cartpole_line_puts_the_cart_at_its_position_and_leans_the_pole() {
        // Centre of the track, pole upright.
        let line = ascii_line(Scene::CartPole, 0, &[0.0, 0.0, 0.0, 0.0], None);
        assert_eq!(
            line,
            "t=   0 |...................[|]...................| x=+0.00 theta=+0.000 (reset)"
        );
        // At the right limit, leaning right; at the left limit, leaning left.
        let right = ascii_line(
            Scene::CartPole,
            7,
            &[2.4, 0.0, 0.1, 0.0],
            Some((&Action::Discrete(1), 1.0)),
        );
        assert!(
            right.starts_with("t=   7 |......................................[/]| "),
            "{right}"
        );
        assert!(right.ends_with("a=1 r=+1.000"), "{right}");
        let left = ascii_line(Scene::CartPole, 8, &[-9.0, 0.0, -0.1, 0.0], None);
        assert!(left.starts_with("t=   8 |[\\]....."), "{left}");
    }

    #[test]
    fn pendulum_line_puts_the_bob_left_of_upright_for_positive_angles() {
        let upright = ascii_line(Scene::Pendulum, 0, &[1.0, 0.0, 0.0], None);
        // The bob covers the upright mark.
        assert!(
            upright.contains("|....................o....................|"),
            "{upright}"
        );
        let half = std::f32::consts::FRAC_PI_2;
        let left = ascii_line(
            Scene::Pendulum,
            1,
            &[half.cos(), half.sin(), 0.5],
            Some((&Action::Continuous(vec![-1.5]), -2.0)),
        );
        // theta = pi/2: a quarter of the dial left of the middle (cell 10 of 0..40).
        assert!(
            left.contains("|..........o.........^....................|"),
            "{left}"
        );
        assert!(
            left.ends_with("theta=+1.57 theta_dot=+0.50 a=-1.50 r=-2.000"),
            "{left}"
        );
    }

    #[test]
    fn scenes_follow_the_environment_ids() {
        assert_eq!(Scene::of("CartPole-v1"), Scene::CartPole);
        assert_eq!(Scene::of(wm_envs::GUSTY_CARTPOLE_ID), Scene::CartPole);
        assert_eq!(Scene::of("Pendulum-v1"), Scene::Pendulum);
        assert_eq!(Scene::of(wm_envs::KICKED_PENDULUM_ID), Scene::Pendulum);
        assert_eq!(Scene::of(wm_envs::WET_CHICKEN_ID), Scene::Values);
        assert!(!Scene::Values.has_png());
        let line = ascii_line(Scene::Values, 3, &[1.0, -0.5], None);
        assert_eq!(line, "t=   3 obs=[+1.000, -0.500] (reset)");
    }

    #[test]
    fn png_frames_are_written_for_cartpole_and_pendulum_and_refused_for_other_envs() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (scene, obs) in [
            (Scene::CartPole, vec![0.5f32, 0.0, 0.2, 0.0]),
            (Scene::Pendulum, vec![0.0f32, 1.0, 0.0]),
        ] {
            let path = dir.path().join(format!("{scene:?}.png"));
            png_frame(scene, &obs, "t=1", &path).expect("frame");
            let bytes = std::fs::read(&path).expect("frame written");
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{scene:?}: not a PNG");
        }
        let error = png_frame(Scene::Values, &[0.0], "", &dir.path().join("x.png")).unwrap_err();
        assert!(error.to_string().contains("no picture"), "{error}");
    }
}
