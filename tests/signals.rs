//! Stopping the trainer (`dlrm_kernels::cli::main`, what `examples/dlrm.rs` runs) with
//! SIGINT and SIGTERM, in a child process: this test binary started again with only
//! `trainer_child_process`, which runs the trainer with the flags it is given.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dlrm_kernels::checkpoint;
use dlrm_kernels::cli;
use dlrm_kernels::train::Output;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dlrm-signals-{}-{name}", std::process::id()))
}

/// The trainer as a child process: `DLRM_TRAINER_CHILD_ARGS` holds its flags, one a
/// line. The signal tests start this test binary with this test alone; run otherwise
/// (with `--ignored`), it has nothing to do.
#[test]
#[ignore = "the trainer process of the signal tests, started by them"]
fn trainer_child_process() {
    let Ok(flags) = std::env::var("DLRM_TRAINER_CHILD_ARGS") else {
        return;
    };
    let argv = std::iter::once("dlrm".to_string()).chain(flags.lines().map(String::from));
    let ui = |_: &cli::Args| cli::Ui {
        out: Output::stdout(),
        progress: None,
    };
    std::process::exit(i32::from(cli::main(argv, ui)));
}

/// The trainer started as a child process with `flags`, its stdout piped.
fn spawn_trainer(flags: &[&str]) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "trainer_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("DLRM_TRAINER_CHILD_ARGS", flags.join("\n"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The steps of the training and evaluation rows of a metrics CSV so far.
fn csv_steps(path: &Path) -> (Vec<u64>, Vec<u64>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Whole lines only: the last one may be half written.
    let text = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let Ok(step) = fields[0].parse::<u64>() else {
            continue;
        };
        if fields.len() == 8 && !fields[5].is_empty() {
            eval.push(step);
        } else if fields.len() == 8 && !fields[2].is_empty() {
            train.push(step);
        }
    }
    (train, eval)
}

fn send(signal: &str, child: &std::process::Child) {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -{signal} {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// Wait for the child's exit (killing it after a generous deadline: a test that hangs
/// tells nothing); its status code, stdout and stderr.
fn finish(mut child: std::process::Child) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the trainer did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

/// Poll the CSV until `ready` says so of its (training, evaluation) steps.
fn wait_for(
    csv: &Path,
    child: &mut std::process::Child,
    ready: impl Fn(&[u64], &[u64]) -> bool,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (train, eval) = csv_steps(csv);
        if ready(&train, &eval) {
            return train.last().copied().unwrap_or(0);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the trainer ended first: {status}");
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the trainer made no progress: {train:?} {eval:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Ctrl-C in the middle of training: the current step finishes, the checkpoint of that
/// step (not of the last evaluation) is saved whole, the summary is printed, the exit
/// status is 130, and no temporary file is left.
#[test]
fn sigint_saves_the_last_step_prints_the_summary_and_exits_130() {
    let dir = tmp("sigint");
    std::fs::create_dir_all(&dir).unwrap();
    let (ckpt, csv) = (dir.join("model.safetensors"), dir.join("metrics.csv"));
    let mut child = spawn_trainer(&[
        "--progress",
        "false",
        "--arch-embedding-size",
        "5000-5000-5000-5000",
        "--mini-batch-size",
        "256",
        "--num-batches",
        "100000",
        "--test-freq",
        "100",
        "--test-num-batches",
        "2",
        "--print-freq",
        "1",
        "--threads",
        "2",
        "--num-workers",
        "0",
        "--save-model",
        ckpt.to_str().unwrap(),
        "--metrics-csv",
        csv.to_str().unwrap(),
    ]);
    // After the evaluation (and checkpoint) at step 100, a few steps more.
    let seen = wait_for(&csv, &mut child, |train, eval| {
        eval.iter().any(|&e| e >= 100) && train.last().is_some_and(|&t| t >= 103)
    });
    send("INT", &child);
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, Some(130), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("stopping after the current step"),
        "{stderr}"
    );
    let stopped: u64 = stdout
        .split("interrupted: stopped after step ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        stdout.contains(&format!(
            "checkpoint saved to {} (step {stopped})",
            ckpt.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(" ms/step without data loading"),
        "the summary: {stdout}"
    );
    let last_eval = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test at step "))
        .filter_map(|l| l.split(':').next()?.parse::<u64>().ok())
        .max()
        .unwrap();
    assert!(
        stopped >= seen && stopped > last_eval,
        "{stopped} {seen} {last_eval}"
    );
    let model = checkpoint::load(&ckpt).unwrap();
    assert_eq!(model.steps(), stopped);
    assert_eq!(listing(&dir), ["metrics.csv", "model.safetensors"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// SIGTERM twice while a checkpoint is written at every step: the second signal stops
/// the process at once, but not in the middle of a write, so the checkpoint loads and no
/// temporary file is left.
#[test]
fn a_second_sigterm_stops_at_once_without_leaving_a_partial_checkpoint() {
    let dir = tmp("sigterm");
    std::fs::create_dir_all(&dir).unwrap();
    let (ckpt, csv) = (dir.join("model.safetensors"), dir.join("metrics.csv"));
    let mut child = spawn_trainer(&[
        "--progress",
        "false",
        "--arch-embedding-size",
        "20000-20000-20000-20000",
        "--mini-batch-size",
        "64",
        "--num-batches",
        "100000",
        "--test-freq",
        "1",
        "--test-num-batches",
        "1",
        "--threads",
        "1",
        "--num-workers",
        "0",
        "--save-model",
        ckpt.to_str().unwrap(),
        "--metrics-csv",
        csv.to_str().unwrap(),
    ]);
    wait_for(&csv, &mut child, |_, eval| eval.len() >= 4);
    send("TERM", &child);
    send("TERM", &child);
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, Some(130), "{stdout}\n{stderr}");
    let model = checkpoint::load(&ckpt).unwrap();
    assert!(model.steps() >= 3, "{}", model.steps());
    assert_eq!(listing(&dir), ["metrics.csv", "model.safetensors"]);
    std::fs::remove_dir_all(dir).unwrap();
}
