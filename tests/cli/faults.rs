//! Reliability: what a user's accidents do to a run. kill -9 and SIGTERM mid-training, torn and
//! corrupt replay files, a replay file deleted before a resume, a full disk at each write site,
//! and evaluation beside a writer or on a read-only folder. Every case ends in a clean error or
//! a clean recovery: no panic, no hang, nothing lost beyond one checkpoint interval.
//!
//! The full-disk and read-only cases mount a small tmpfs (Linux, as root, as in CI); where that
//! is not allowed they say that they were skipped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::train::{TINY, TINY_MLP, config_path};
use crate::util::{stderr, stdout, wm};

/// A limit that only a hung process reaches (a tiny run takes seconds).
const HANG_LIMIT: Duration = Duration::from_secs(180);

/// `wm train` arguments of a tiny Gaussian-MLP CartPole run in `runs`, then `extra`.
fn train_args(runs: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--config",
        config_path("cartpole_gaussian_mlp.ron").as_str(),
        "--runs-dir",
        runs.to_str().expect("utf-8"),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(
        TINY.iter()
            .chain(TINY_MLP)
            .chain(extra)
            .map(|s| s.to_string()),
    );
    args
}

/// Trains a tiny run to the end (20 updates) and returns its folder.
fn finished_run(runs: &Path, extra: &[&str]) -> PathBuf {
    let args = train_args(runs, extra);
    let output = wm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        output.status.success(),
        "wm train failed: {}",
        stderr(&output)
    );
    only_run(runs)
}

fn only_run(runs: &Path) -> PathBuf {
    std::fs::read_dir(runs)
        .expect("runs dir")
        .next()
        .expect("one run folder")
        .expect("entry")
        .path()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A `wm` child with stdout and stderr in files (so a chatty child never blocks on a pipe).
struct Spawned {
    child: Child,
    logs: tempfile::TempDir,
}

fn spawn_wm(args: &[String]) -> Spawned {
    let logs = tempfile::tempdir().expect("temp dir");
    let out = File::create(logs.path().join("stdout")).expect("stdout file");
    let err = File::create(logs.path().join("stderr")).expect("stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_wm"))
        .args(args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("wm starts");
    Spawned { child, logs }
}

impl Spawned {
    /// Waits for the exit (failing the test if the process hangs); returns (code, stdout, stderr).
    fn wait(mut self) -> (Option<i32>, String, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > HANG_LIMIT {
                let _ = self.child.kill();
                panic!("wm hung for {HANG_LIMIT:?}; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (
            status.code(),
            std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default(),
            self.stderr(),
        )
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// Polls until `ready` holds (failing the test if the process exits or hangs first).
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let started = Instant::now();
        while !ready() {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "wm exited ({status}) before {what}; stderr: {}",
                    self.stderr()
                );
            }
            assert!(
                started.elapsed() < HANG_LIMIT,
                "{what} did not happen within {HANG_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The update of the run's checkpoint, if there is a readable one.
fn checkpoint_update(run: &Path) -> Option<u64> {
    wm_train::checkpoint::Checkpoint::load(&run.join("checkpoint.wmck"))
        .ok()
        .map(|checkpoint| checkpoint.meta.update)
}

fn cartpole_spec() -> wm_replay::ReplaySpec {
    wm_train::data::replay_spec(wm_envs::make("cartpole").expect("cartpole").as_ref())
}

/// The episodes of a replay file, read as `wm eval` reads them (no lock, torn tail left out).
fn episodes(path: &Path) -> Vec<wm_replay::Episode> {
    let (buffer, _) = wm_replay::ReplayBuffer::open_read_only(
        path,
        cartpole_spec(),
        usize::MAX,
        wm_replay::LoadMode::Strict,
    )
    .expect("replay readable");
    buffer.episodes().cloned().collect()
}

/// Sends `signal` (e.g. "-TERM") to the child with the system's `kill`.
#[cfg(unix)]
fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} failed");
}

/// A long run that checkpoints every 20 updates, started in `runs`.
fn start_long_run(runs: &Path) -> Spawned {
    spawn_wm(&train_args(
        runs,
        &[
            "--set",
            "schedule.updates=1000000",
            "--set",
            "schedule.checkpoint_every=20",
            "--set",
            "schedule.log_every=20",
            "--set",
            "schedule.eval_every=1000000",
        ],
    ))
}

#[test]
fn kill_9_at_several_points_then_resume_keeps_the_replay_and_the_last_checkpoint() {
    let runs = tempfile::tempdir().expect("temp dir");
    let mut spawned = start_long_run(runs.path());
    spawned.wait_until("a run folder appears", || {
        std::fs::read_dir(runs.path()).is_ok_and(|mut d| d.next().is_some())
    });
    let run = only_run(runs.path());
    // Kill points: just after the first checkpoint, later in a resumed run, and early in the
    // next resumed one.
    let mut floor = 20;
    for point in 0..3 {
        spawned.wait_until(&format!("a checkpoint at update >= {floor}"), || {
            checkpoint_update(&run).is_some_and(|u| u >= floor)
        });
        spawned.child.kill().expect("SIGKILL");
        let (code, _, _) = spawned.wait();
        assert_eq!(code, None, "kill point {point}: killed by a signal");

        let checkpointed =
            checkpoint_update(&run).expect("the checkpoint survives a kill -9 (atomic rename)");
        assert!(
            checkpointed >= floor && checkpointed.is_multiple_of(20),
            "kill point {point}: checkpoint at update {checkpointed}"
        );
        let replay_before = episodes(&run.join("replay_train.wmrb"));
        assert!(!replay_before.is_empty());

        // Resume: continues from the checkpoint (so at most one checkpoint interval, 20 updates,
        // is redone) with every episode the replay file held at the kill.
        let resumed_total = checkpointed + 10;
        let output = wm(&[
            "train",
            "--resume",
            path_str(&run),
            "--set",
            format!("schedule.updates={resumed_total}").as_str(),
            "--quiet",
        ]);
        assert!(
            output.status.success(),
            "kill point {point}: resume failed: {}",
            stderr(&output)
        );
        assert!(
            stdout(&output).contains("10 updates this run"),
            "kill point {point}: {}",
            stdout(&output)
        );
        let replay_after = episodes(&run.join("replay_train.wmrb"));
        assert!(
            replay_after.len() >= replay_before.len()
                && replay_after[..replay_before.len()] == replay_before[..],
            "kill point {point}: the {} episodes before the kill are not all kept ({} after)",
            replay_before.len(),
            replay_after.len()
        );
        assert_eq!(checkpoint_update(&run), Some(resumed_total));
        if point == 2 {
            break;
        }
        let args: Vec<String> = [
            "train",
            "--resume",
            path_str(&run),
            "--set",
            "schedule.updates=1000000",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        spawned = spawn_wm(&args);
        floor = resumed_total + if point == 0 { 100 } else { 20 };
    }
}

#[cfg(unix)]
#[test]
fn sigterm_checkpoints_and_exits_non_zero_with_the_resume_command() {
    let runs = tempfile::tempdir().expect("temp dir");
    let mut spawned = start_long_run(runs.path());
    spawned.wait_until("a run folder appears", || {
        std::fs::read_dir(runs.path()).is_ok_and(|mut d| d.next().is_some())
    });
    let run = only_run(runs.path());
    spawned.wait_until("the first checkpoint", || checkpoint_update(&run).is_some());
    send_signal(&spawned.child, "-TERM");
    let (code, _, message) = spawned.wait();
    assert_eq!(
        code,
        Some(1),
        "SIGTERM should stop the run like Ctrl-C (exit 1, not 143): {message}"
    );
    assert!(
        message.contains("stopping at the next safe point"),
        "{message}"
    );
    assert!(
        message.contains(&format!("wm train --resume {}", run.display())),
        "{message}"
    );
    let update: u64 = message
        .split("interrupted at update ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no update in: {message}"));
    assert_eq!(
        checkpoint_update(&run),
        Some(update),
        "the checkpoint holds the update the run stopped at"
    );
    let output = wm(&[
        "train",
        "--resume",
        path_str(&run),
        "--set",
        format!("schedule.updates={}", update + 5).as_str(),
        "--quiet",
    ]);
    assert!(
        output.status.success(),
        "resume after SIGTERM failed: {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("5 updates this run"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn torn_final_replay_record_is_cut_on_resume_with_a_warning() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = finished_run(runs.path(), &[]);
    let replay = run.join("replay_train.wmrb");
    let intact = episodes(&replay);
    // A kill during an append: the last record loses its last 9 bytes.
    let len = std::fs::metadata(&replay).expect("replay").len();
    File::options()
        .write(true)
        .open(&replay)
        .expect("open")
        .set_len(len - 9)
        .expect("truncate");
    let check = wm(&["replay", "check", path_str(&run)]);
    assert!(
        check.status.success(),
        "a torn tail is not corruption: {}{}",
        stdout(&check),
        stderr(&check)
    );
    assert!(
        stdout(&check).contains("torn final record"),
        "{}",
        stdout(&check)
    );

    let output = wm(&[
        "train",
        "--resume",
        path_str(&run),
        "--set",
        "schedule.updates=25",
        "--quiet",
    ]);
    assert!(
        output.status.success(),
        "resume with a torn replay tail failed: {}",
        stderr(&output)
    );
    let warning = stderr(&output);
    assert!(
        warning.contains("warning:")
            && warning.contains("replay_train.wmrb: cut off")
            && warning.contains("truncated record"),
        "{warning}"
    );
    let after = episodes(&replay);
    assert_eq!(
        after[..intact.len() - 1],
        intact[..intact.len() - 1],
        "every complete episode is kept"
    );
}

#[test]
fn corrupt_replay_stops_resume_and_wm_replay_recover_keeps_the_intact_prefix() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = finished_run(runs.path(), &[]);
    let replay = run.join("replay_train.wmrb");
    let mut bytes = std::fs::read(&replay).expect("replay");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&replay, &bytes).expect("write");

    let resumed = wm(&[
        "train",
        "--resume",
        path_str(&run),
        "--set",
        "schedule.updates=25",
        "--quiet",
    ]);
    assert_eq!(resumed.status.code(), Some(1));
    let message = stderr(&resumed);
    assert!(
        message.contains("is corrupt at byte")
            && message.contains(&format!("wm replay recover {}", run.display())),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    assert_eq!(
        std::fs::read(&replay).expect("replay"),
        bytes,
        "a refused resume leaves the file as it was"
    );

    let check = wm(&["replay", "check", path_str(&run)]);
    assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("CORRUPT from byte")
            && stderr(&check).contains("wm replay recover"),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );

    let recover = wm(&["replay", "recover", path_str(&run)]);
    assert!(recover.status.success(), "{}", stderr(&recover));
    assert!(
        stdout(&recover).contains("replay_train.wmrb: kept")
            && stdout(&recover).contains("replay_eval.wmrb: intact"),
        "{}",
        stdout(&recover)
    );
    assert!((std::fs::metadata(&replay).expect("replay").len() as usize) <= middle);
    let check = wm(&["replay", "check", path_str(&run)]);
    assert!(check.status.success(), "{}", stdout(&check));

    let resumed = wm(&[
        "train",
        "--resume",
        path_str(&run),
        "--set",
        "schedule.updates=25",
        "--quiet",
    ]);
    assert!(
        resumed.status.success(),
        "resume after recovery failed: {}",
        stderr(&resumed)
    );
}

#[test]
fn missing_replay_file_on_resume_is_an_error_unless_asked_for_a_new_one() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = finished_run(runs.path(), &[]);
    std::fs::remove_file(run.join("replay_train.wmrb")).expect("remove");
    let output = wm(&[
        "train",
        "--resume",
        path_str(&run),
        "--set",
        "schedule.updates=25",
        "--quiet",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("replay_train.wmrb missing") && message.contains("--new-replay"),
        "{message}"
    );
    assert!(
        !run.join("replay_train.wmrb").exists(),
        "nothing collected without --new-replay"
    );

    let output = wm(&[
        "train",
        "--resume",
        path_str(&run),
        "--new-replay",
        "--set",
        "schedule.updates=25",
        "--quiet",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(run.join("replay_train.wmrb").is_file());
}

#[test]
fn eval_and_plot_read_replay_beside_a_writer_and_compare_a_run_with_itself() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = finished_run(runs.path(), &[]);
    // This process holds the writer's exclusive lock on both files, as a running `wm train` does.
    let spec = cartpole_spec();
    let _train = wm_replay::ReplayBuffer::open(
        run.join("replay_train.wmrb"),
        spec.clone(),
        1_000_000,
        wm_replay::LoadMode::Strict,
    )
    .expect("lock");
    let _eval = wm_replay::ReplayBuffer::open(
        run.join("replay_eval.wmrb"),
        spec,
        1_000_000,
        wm_replay::LoadMode::Strict,
    )
    .expect("lock");

    let eval = wm(&["eval", "--run", path_str(&run), "--compare", path_str(&run)]);
    assert!(
        eval.status.success(),
        "wm eval beside a writer failed: {}",
        stderr(&eval)
    );
    assert!(
        stdout(&eval).contains("both models on") && stdout(&eval).contains("open-loop RMSE h = 5"),
        "{}",
        stdout(&eval)
    );
    let out = runs.path().join("plot.png");
    let plot = wm(&[
        "plot",
        "--run",
        path_str(&run),
        "--compare",
        path_str(&run),
        "--out",
        path_str(&out),
        "--episodes",
        "1",
        "--horizon",
        "10",
    ]);
    assert!(
        plot.status.success(),
        "wm plot beside a writer failed: {}",
        stderr(&plot)
    );
    assert!(out.is_file());
}

/// A tmpfs mounted on a temporary folder, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m"), or says why the calling test is skipped.
    fn mount(size: &str, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                format!("size={size}").as_str(),
                "tmpfs",
                path_str(dir.path()),
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("{test}: SKIPPED: cannot mount a tmpfs here (it needs root on Linux)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro", path_str(self.path())])
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount read-only failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Copies the files of `run` into a new folder `into/<run name>`.
fn copy_run(run: &Path, into: &Path) -> PathBuf {
    let copy = into.join(run.file_name().expect("name"));
    std::fs::create_dir(&copy).expect("mkdir");
    for entry in std::fs::read_dir(run).expect("run") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, copy.join(path.file_name().expect("name"))).expect("copy");
    }
    copy
}

/// Fills the file system of `dir` with a file of zeros until it is full, then frees `spare` bytes.
fn fill(dir: &Path, spare: u64) {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = File::create(&path).expect("filler");
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    file.set_len(written.saturating_sub(spare))
        .expect("free the spare bytes");
    file.sync_all().expect("sync");
}

fn assert_clean_failure(code: Option<i32>, message: &str, site: &str) {
    assert_eq!(
        code,
        Some(1),
        "{site}: a full disk should be an error (exit 1): {message}"
    );
    assert!(
        message.contains("No space left on device"),
        "{site}: {message}"
    );
    assert!(!message.contains("panicked"), "{site}: {message}");
}

#[test]
fn disk_full_at_each_write_site_is_an_error_not_a_panic_or_a_hang() {
    let Some(tmpfs) = Tmpfs::mount("4m", "disk_full_at_each_write_site") else {
        return;
    };
    let runs = tempfile::tempdir().expect("temp dir");
    // Wider layers make the checkpoint (model and Adam state) several pages long.
    let run = finished_run(runs.path(), &["--set", "model.hidden=[64, 64]"]);

    // On resume, before the pipeline starts: the new TensorBoard event file.
    let copy = copy_run(&run, tmpfs.path());
    fill(tmpfs.path(), 0);
    let output = spawn_wm(&[
        "train".into(),
        "--resume".into(),
        path_str(&copy).into(),
        "--quiet".into(),
    ])
    .wait();
    assert_clean_failure(output.0, &output.2, "event file on resume");
    assert!(
        output.2.contains("tfevents"),
        "the event file is named: {}",
        output.2
    );

    // eval.json.
    std::fs::remove_file(tmpfs.path().join("filler")).expect("free");
    std::fs::remove_file(copy.join("eval.json")).expect("remove eval.json");
    fill(tmpfs.path(), 0);
    let output = spawn_wm(&["eval".into(), "--run".into(), path_str(&copy).into()]).wait();
    assert_clean_failure(output.0, &output.2, "eval.json");
    assert!(output.2.contains("eval.json"), "{}", output.2);

    // The checkpoint: room for the event file's first page, not for the checkpoint.
    std::fs::remove_file(tmpfs.path().join("filler")).expect("free");
    for entry in std::fs::read_dir(&copy).expect("copy") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("events.out"))
        {
            std::fs::remove_file(path).expect("remove events");
        }
    }
    fill(tmpfs.path(), 8 * 1024);
    let output = spawn_wm(&[
        "train".into(),
        "--resume".into(),
        path_str(&copy).into(),
        "--quiet".into(),
    ])
    .wait();
    assert_clean_failure(output.0, &output.2, "checkpoint");
    assert!(output.2.contains("checkpoint"), "{}", output.2);
    // Helper "iface" removes the leftover of a failed write in checkpoint.rs: this assertion
    // passes once that is merged.
    let leftovers: Vec<_> = std::fs::read_dir(&copy)
        .expect("copy")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a failed checkpoint write left {leftovers:?} behind"
    );
    assert_eq!(
        checkpoint_update(&copy),
        Some(20),
        "the old checkpoint is intact"
    );
}

#[test]
fn disk_full_mid_training_stops_cleanly_and_the_run_resumes_once_there_is_room() {
    let Some(tmpfs) = Tmpfs::mount("16m", "disk_full_mid_training") else {
        return;
    };
    let mut spawned = start_long_run(tmpfs.path());
    spawned.wait_until("a run folder appears", || {
        std::fs::read_dir(tmpfs.path()).is_ok_and(|d| d.count() > 0)
    });
    let run = only_run(tmpfs.path());
    spawned.wait_until("the first checkpoint", || checkpoint_update(&run).is_some());
    // The disk fills while the run writes replay records, events and checkpoints.
    fill(tmpfs.path(), 0);
    let (code, _, message) = spawned.wait();
    assert_clean_failure(code, &message, "mid-training");
    eprintln!("disk full mid-training reported: {message}");

    std::fs::remove_file(tmpfs.path().join("filler")).expect("free");
    let check = wm(&["replay", "check", path_str(&run)]);
    assert!(
        check.status.success(),
        "the replay is intact after a failed append: {}{}",
        stdout(&check),
        stderr(&check)
    );
    let update = checkpoint_update(&run).expect("a checkpoint survives");
    let output = wm(&[
        "train",
        "--resume",
        path_str(&run),
        "--set",
        format!("schedule.updates={}", update + 5).as_str(),
        "--quiet",
    ]);
    assert!(
        output.status.success(),
        "resume after freeing space failed: {}",
        stderr(&output)
    );
}

#[test]
fn eval_and_plot_work_on_a_read_only_run_folder() {
    let Some(tmpfs) = Tmpfs::mount("8m", "eval_and_plot_work_on_a_read_only_run_folder") else {
        return;
    };
    let runs = tempfile::tempdir().expect("temp dir");
    let run = finished_run(runs.path(), &[]);
    let copy = copy_run(&run, tmpfs.path());
    tmpfs.remount_read_only();

    let eval = wm(&[
        "eval",
        "--run",
        path_str(&copy),
        "--compare",
        path_str(&copy),
    ]);
    assert!(
        eval.status.success(),
        "wm eval on a read-only folder failed: {}",
        stderr(&eval)
    );
    assert!(
        stdout(&eval).contains("after 20 updates"),
        "{}",
        stdout(&eval)
    );
    assert!(
        stderr(&eval).contains("eval.json not written"),
        "{}",
        stderr(&eval)
    );
    let out = runs.path().join("eval_elsewhere.json");
    let eval = wm(&["eval", "--run", path_str(&copy), "--out", path_str(&out)]);
    assert!(eval.status.success() && out.is_file(), "{}", stderr(&eval));

    let png = runs.path().join("open_loop.png");
    let plot = wm(&[
        "plot",
        "--run",
        path_str(&copy),
        "--out",
        path_str(&png),
        "--episodes",
        "1",
        "--horizon",
        "10",
    ]);
    assert!(
        plot.status.success(),
        "wm plot on a read-only folder failed: {}",
        stderr(&plot)
    );
    assert!(
        png.is_file() && stderr(&plot).contains("not sent to TensorBoard"),
        "{}",
        stderr(&plot)
    );
}

#[test]
fn cli_messages_name_the_problem() {
    let missing = wm(&["env", "rollout", "--env", "cartpole"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("--steps <STEPS>"),
        "the missing argument is named: {}",
        stderr(&missing)
    );

    let nothing = wm(&["env", "rollout", "--env", "cartpole", "--steps", "0"]);
    assert!(
        nothing.status.success() && stdout(&nothing).is_empty(),
        "{}",
        stderr(&nothing)
    );
    assert!(
        stderr(&nothing).contains("--steps 0"),
        "an empty output says why: {:?}",
        stderr(&nothing)
    );

    // A negative target parses (it then fails on the missing config file, not on the argument).
    let solve = wm(&[
        "bench",
        "solve",
        "--config",
        "/nonexistent.ron",
        "--target",
        "-200",
        "--budget",
        "100",
    ]);
    assert!(
        !stderr(&solve).contains("unexpected argument"),
        "{}",
        stderr(&solve)
    );
    assert!(
        stderr(&solve).contains("nonexistent.ron"),
        "{}",
        stderr(&solve)
    );
}
