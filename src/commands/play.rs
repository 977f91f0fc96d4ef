//! `wm play`: a trained run's acting policy on the real environment.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use wm_backend::DeviceSpec;
use wm_train::play::{PlayableRun, PlayedEpisode};
use wm_train::render::{Scene, ascii_line, png_frame};

use crate::cli::{PlayArgs, RenderKind};

/// The most episodes one `wm play` runs (a typo like `--episodes 1000000000` is an error, not a
/// day of CPU).
const MAX_EPISODES: usize = 100_000;

pub fn play(args: &PlayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_EPISODES).contains(&args.episodes),
        "--episodes must be between 1 and {MAX_EPISODES}, got {}",
        args.episodes
    );
    if args.render == Some(RenderKind::Png) && args.out.is_none() {
        anyhow::bail!("--render png needs --out DIR, the folder for the frames");
    }
    if let Some(out) = &args.out
        && out.exists()
        && !out.is_dir()
    {
        anyhow::bail!("--out {}: exists and is not a folder", out.display());
    }
    let device = args.device.parse::<DeviceSpec>()?.init()?;
    let run = PlayableRun::load(&args.run, &device)
        .with_context(|| format!("loading run {}", args.run.display()))?;
    let env_id = wm_envs::make(&run.config.env)?.id().to_string();
    let scene = Scene::of(&env_id);
    if args.render == Some(RenderKind::Png) && !scene.has_png() {
        anyhow::bail!("--render png: {env_id} has no picture; use --render ascii");
    }
    // Everything is checked: only now is anything written.
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    println!(
        "{env_id}: the {} of {} after {} updates, {} episodes from seed {}",
        run.policy_kind(),
        args.run.display(),
        run.update,
        args.episodes,
        args.seed
    );

    let mut renderer = Renderer {
        kind: args.render,
        out: args.out.clone(),
        scene,
        text: String::new(),
        frames: 0,
        error: None,
    };
    let episodes = run.play(args.episodes, args.seed, &device, &mut |step| {
        renderer.step(step)
    })?;
    if let Some(error) = renderer.error {
        return Err(error);
    }
    print!("{}", summary(&episodes));
    match (args.render, &args.out) {
        (Some(RenderKind::Png), Some(out)) => {
            println!("{} PNG frames in {}", renderer.frames, out.display());
        }
        (Some(RenderKind::Ascii), Some(out)) => {
            println!(
                "ASCII rendering in {} (episode_NNN.txt, one per episode)",
                out.display()
            );
        }
        _ => {}
    }
    Ok(())
}

/// The results table and the mean.
fn summary(episodes: &[PlayedEpisode]) -> String {
    let mut out = String::from("episode  seed  return  length\n");
    for (i, episode) in episodes.iter().enumerate() {
        let _ = writeln!(
            out,
            "{i:>7} {:>5} {:>7.1} {:>7}",
            episode.seed, episode.return_, episode.length
        );
    }
    let n = episodes.len().max(1) as f64;
    let _ = writeln!(
        out,
        "mean return {:.1}, mean length {:.1} over {} episodes",
        episodes.iter().map(|e| e.return_).sum::<f64>() / n,
        episodes.iter().map(|e| e.length as f64).sum::<f64>() / n,
        episodes.len()
    );
    out
}

/// Renders the steps as they come; the first write error stops the rendering and is returned
/// after the episodes.
struct Renderer {
    kind: Option<RenderKind>,
    out: Option<PathBuf>,
    scene: Scene,
    /// The episode's ASCII lines so far (written per episode under --out).
    text: String,
    frames: usize,
    error: Option<anyhow::Error>,
}

impl Renderer {
    fn step(&mut self, step: wm_train::acting::WatchedStep<'_>) {
        if self.error.is_some() {
            return;
        }
        if let Err(error) = self.try_step(step) {
            self.error = Some(error);
        }
    }

    fn try_step(&mut self, step: wm_train::acting::WatchedStep<'_>) -> anyhow::Result<()> {
        match (self.kind, &self.out) {
            (None, _) => {}
            (Some(RenderKind::Ascii), None) => {
                if step.t == 0 {
                    println!("episode {}", step.episode);
                }
                println!("{}", ascii_line(self.scene, step.t, step.obs, step.taken));
            }
            (Some(RenderKind::Ascii), Some(out)) => {
                let _ = writeln!(
                    self.text,
                    "{}",
                    ascii_line(self.scene, step.t, step.obs, step.taken)
                );
                if step.done {
                    let path = out.join(format!("episode_{:03}.txt", step.episode));
                    write_new(&path, std::mem::take(&mut self.text).as_bytes())?;
                }
            }
            (Some(RenderKind::Png), Some(out)) => {
                let path = out.join(format!(
                    "episode_{:03}_step_{:04}.png",
                    step.episode, step.t
                ));
                let caption = match step.taken {
                    Some((action, reward)) => format!(
                        "episode {} t={} a={} r={reward:+.2}",
                        step.episode,
                        step.t,
                        wm_train::render::action_text(action)
                    ),
                    None => format!("episode {} t=0", step.episode),
                };
                png_frame(self.scene, step.obs, &caption, &path)?;
                self.frames += 1;
            }
            (Some(RenderKind::Png), None) => {
                anyhow::bail!("--render png needs --out DIR, the folder for the frames")
            }
        }
        Ok(())
    }
}

fn write_new(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
