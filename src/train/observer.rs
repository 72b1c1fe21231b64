//! What a run tells the outside ([`Observer`]), and the observers the library ships: log
//! lines ([`LogLines`]), a metrics CSV ([`CsvLog`]) and checkpoints ([`Checkpoints`]). A
//! terminal progress bar or a plot is an observer too, in the program that wants one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Evaluation, Progress, RunInfo, StopReason, Summary};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::model::Dlrm;

use super::Stop;

/// Told what a [`Trainer`](super::Trainer) run does, in this order: [`Observer::start`];
/// [`Observer::evaluated`] after the evaluation before training (if any);
/// [`Observer::progress`] every `report_every` steps and [`Observer::evaluated`] after each
/// evaluation; [`Observer::stopping`] when the run ends early (a stop request, a target
/// reached); [`Observer::finished`] at the end. Every method has a default that does
/// nothing; an error from one ends the run with that error.
///
/// ```
/// use dlrm_kernels::model::Dlrm;
/// use dlrm_kernels::train::{Evaluation, Observer};
///
/// /// Remembers the best AUC.
/// #[derive(Default)]
/// struct BestAuc(f64);
///
/// impl Observer for BestAuc {
///     fn evaluated(&mut self, _: &Dlrm, e: &Evaluation) -> dlrm_kernels::Result<()> {
///         self.0 = self.0.max(e.eval.auc);
///         Ok(())
///     }
/// }
/// ```
pub trait Observer: Send {
    /// The run starts.
    ///
    /// # Errors
    ///
    /// Whatever the observer fails with; the run does not start.
    fn start(&mut self, run: &RunInfo) -> Result<()> {
        let _ = run;
        Ok(())
    }

    /// Training went on (every `report_every` steps, and at the last step).
    ///
    /// # Errors
    ///
    /// Whatever the observer fails with; the run stops.
    fn progress(&mut self, progress: &Progress) -> Result<()> {
        let _ = progress;
        Ok(())
    }

    /// The model was evaluated.
    ///
    /// # Errors
    ///
    /// Whatever the observer fails with; the run stops.
    fn evaluated(&mut self, model: &Dlrm, evaluation: &Evaluation) -> Result<()> {
        let _ = (model, evaluation);
        Ok(())
    }

    /// The run ends early, for `reason`, after the model's last step.
    ///
    /// # Errors
    ///
    /// Whatever the observer fails with.
    fn stopping(&mut self, model: &Dlrm, reason: StopReason) -> Result<()> {
        let _ = (model, reason);
        Ok(())
    }

    /// The run ended.
    ///
    /// # Errors
    ///
    /// Whatever the observer fails with.
    fn finished(&mut self, model: &Dlrm, summary: &Summary) -> Result<()> {
        let _ = (model, summary);
        Ok(())
    }
}

/// Where observers write their lines: standard output by default, or any function (a
/// progress bar's `println`, a test's buffer). Cloned freely.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use dlrm_kernels::train::Output;
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let out = Output::new(move |line| sink.lock().unwrap().push(line.to_string()));
/// out.line("hello");
/// assert_eq!(*seen.lock().unwrap(), ["hello"]);
/// ```
#[derive(Clone)]
pub struct Output(Arc<dyn Fn(&str) + Send + Sync>);

impl Output {
    /// Lines to standard output.
    ///
    /// ```
    /// dlrm_kernels::train::Output::stdout().line("to stdout");
    /// ```
    pub fn stdout() -> Self {
        Output::new(|line| println!("{line}"))
    }

    /// Lines to `f`.
    ///
    /// ```
    /// let quiet = dlrm_kernels::train::Output::new(|_| {});
    /// quiet.line("nowhere");
    /// ```
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Output(Arc::new(f))
    }

    /// Write one line (it may hold several, separated by `\n`).
    ///
    /// ```
    /// dlrm_kernels::train::Output::stdout().line("one line");
    /// ```
    pub fn line(&self, line: &str) {
        (self.0)(line)
    }
}

impl Default for Output {
    fn default() -> Self {
        Output::stdout()
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}

/// Log lines: each evaluation (`test at step 500: loss 0.45123, accuracy 79.12 %, AUC
/// 0.8123 (10000 samples)`), why a run ended early, and the summary of where the time went;
/// with [`LogLines::with_progress`], a line per progress report too.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use dlrm_kernels::model::{Dlrm, DlrmConfig};
/// use dlrm_kernels::train::{Eval, Evaluation, LogLines, Observer, Output};
/// let lines = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&lines);
/// let mut log = LogLines::new(Output::new(move |l| sink.lock().unwrap().push(l.to_string())));
/// let eval = Eval { loss: 0.5, accuracy: 0.75, auc: 0.8, samples: 100 };
/// log.evaluated(&Dlrm::new(DlrmConfig::tiny(), 0)?, &Evaluation { eval, step: 7, epoch: 0 })?;
/// assert_eq!(
///     lines.lock().unwrap()[0],
///     "test at step 7: loss 0.50000, accuracy 75.00 %, AUC 0.8000 (100 samples)"
/// );
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct LogLines {
    out: Output,
    progress: bool,
}

impl LogLines {
    /// Lines to `out`.
    ///
    /// ```
    /// let log = dlrm_kernels::train::LogLines::new(dlrm_kernels::train::Output::stdout());
    /// # let _ = log;
    /// ```
    pub fn new(out: Output) -> Self {
        LogLines {
            out,
            progress: false,
        }
    }

    /// Also a line per progress report ([`Progress::describe`]), for a log without a
    /// progress bar.
    ///
    /// ```
    /// let log = dlrm_kernels::train::LogLines::default().with_progress();
    /// # let _ = log;
    /// ```
    pub fn with_progress(mut self) -> Self {
        self.progress = true;
        self
    }
}

impl Observer for LogLines {
    fn progress(&mut self, progress: &Progress) -> Result<()> {
        if self.progress {
            self.out.line(&format!(
                "step {}/{}: {}",
                progress.done,
                progress.total,
                progress.describe()
            ));
        }
        Ok(())
    }

    fn evaluated(&mut self, _: &Dlrm, e: &Evaluation) -> Result<()> {
        self.out.line(&e.describe());
        Ok(())
    }

    fn stopping(&mut self, model: &Dlrm, reason: StopReason) -> Result<()> {
        self.out.line(&match reason {
            StopReason::Interrupted => format!("interrupted: stopped after step {}", model.steps()),
            StopReason::TargetReached { metric, value } => format!(
                "test {metric} {value:.4} reached the target at step {}: stopped",
                model.steps()
            ),
        });
        Ok(())
    }

    fn finished(&mut self, _: &Dlrm, summary: &Summary) -> Result<()> {
        self.out.line(&summary.describe());
        Ok(())
    }
}

/// `path` can be written by the end of a run: not a directory, in a directory that exists
/// and takes new files, writable if it exists. Checked before anything runs; changes
/// nothing (a probe file is made and removed).
///
/// # Errors
///
/// [`Error::Io`] naming the file and why.
///
/// ```
/// use dlrm_kernels::train::check_writable;
/// let err = check_writable(std::path::Path::new("/nonexistent/dir/m.csv")).unwrap_err();
/// assert_eq!(err.to_string(), "/nonexistent/dir/m.csv: directory /nonexistent/dir does not exist");
/// assert!(check_writable(&std::env::temp_dir()).is_err()); // a directory
/// ```
pub fn check_writable(path: &Path) -> Result<()> {
    let bad = |why: String| Error::Io {
        path: path.display().to_string(),
        message: why,
    };
    if path.is_dir() {
        return Err(bad("is a directory".into()));
    }
    let Some(name) = path.file_name() else {
        return Err(bad("names no file".into()));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(bad(format!("directory {} does not exist", dir.display())));
    }
    if path.exists() {
        // Opened for appending and closed: the file is not changed.
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| bad(format!("cannot be written: {e}")))?;
    }
    // A checkpoint's temporary file, or a new CSV, is a new file in that directory.
    let mut probe = std::ffi::OsString::from(".");
    probe.push(name);
    probe.push(format!(".probe-{}", std::process::id()));
    let probe = dir.join(probe);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| bad(format!("cannot create a file in {}: {e}", dir.display())))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// The metrics over time as CSV: a row per progress report (training loss, learning rate,
/// ms per step) and per evaluation (test loss, accuracy, AUC). The columns: `step`,
/// `epoch`, `train_loss` (mean since the last report), `learning_rate`, `ms_per_step`
/// (mean over the epoch so far), `test_loss`, `test_accuracy`, `test_auc`; a row leaves
/// the columns it has no value for empty.
///
/// ```
/// use dlrm_kernels::model::{Dlrm, DlrmConfig};
/// use dlrm_kernels::train::{CsvLog, Eval, Evaluation, Observer};
/// let path = std::env::temp_dir().join(format!("csvlog-doc-{}.csv", std::process::id()));
/// let mut csv = CsvLog::new(&path)?; // checked, not created yet
/// let eval = Eval { loss: 0.5, accuracy: 0.75, auc: 0.8, samples: 100 };
/// csv.evaluated(&Dlrm::new(DlrmConfig::tiny(), 0)?, &Evaluation { eval, step: 3, epoch: 0 })?;
/// let text = std::fs::read_to_string(&path)?;
/// assert_eq!(text.lines().nth(1), Some("3,0,,0.1,,0.5,0.75,0.8"));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct CsvLog {
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl CsvLog {
    /// A CSV at `path`, created (truncated) when the run starts.
    ///
    /// # Errors
    ///
    /// Those of [`check_writable`]: nothing is created yet.
    ///
    /// ```
    /// assert!(dlrm_kernels::train::CsvLog::new(std::path::Path::new("/nonexistent/m.csv")).is_err());
    /// ```
    pub fn new(path: &Path) -> Result<Self> {
        check_writable(path)?;
        Ok(CsvLog {
            path: path.to_path_buf(),
            file: None,
        })
    }

    /// Create (truncate) the file and write the header.
    fn open(&mut self) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        let mut f = BufWriter::new(File::create(&self.path).map_err(io)?);
        writeln!(
            f,
            "step,epoch,train_loss,learning_rate,ms_per_step,test_loss,test_accuracy,test_auc"
        )
        .and_then(|()| f.flush())
        .map_err(io)?;
        self.file = Some(f);
        Ok(())
    }

    /// One row (the file made first if it is not yet).
    fn row(&mut self, fields: [String; 8]) -> Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        let f = self.file.as_mut().expect("opened above");
        // Whole lines reach the file as they are written: another process may follow it.
        writeln!(f, "{}", fields.join(","))
            .and_then(|()| f.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

impl Observer for CsvLog {
    fn start(&mut self, _: &RunInfo) -> Result<()> {
        // Made now, so that the file exists from the start of the run.
        self.open()
    }

    fn progress(&mut self, p: &Progress) -> Result<()> {
        self.row([
            p.step.to_string(),
            p.epoch.to_string(),
            p.loss.to_string(),
            p.learning_rate.to_string(),
            p.ms_per_step.to_string(),
            String::new(),
            String::new(),
            String::new(),
        ])
    }

    fn evaluated(&mut self, model: &Dlrm, e: &Evaluation) -> Result<()> {
        self.row([
            e.step.to_string(),
            e.epoch.to_string(),
            String::new(),
            model.learning_rate().to_string(),
            String::new(),
            e.eval.loss.to_string(),
            e.eval.accuracy.to_string(),
            e.eval.auc.to_string(),
        ])
    }
}

/// Checkpoints at `path` ([`checkpoint::save`]): after every evaluation during training,
/// and when the run ends with steps not yet saved (at a stop request too); a line says what
/// was saved when a run stops early. Written while holding the run's [`Stop::hold`], so a
/// signal handler that ends the process waits for the write to finish.
///
/// ```
/// let path = std::path::Path::new("/nonexistent/model.safetensors");
/// let err = dlrm_kernels::train::Checkpoints::new(path, Default::default()).unwrap_err();
/// assert!(err.to_string().ends_with("directory /nonexistent does not exist"));
/// ```
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    out: Output,
    /// The run's stop handle and the step it started at, once it has.
    run: Option<(Stop, u64)>,
    /// The step of the last checkpoint written.
    saved_at: Option<u64>,
}

impl Checkpoints {
    /// Checkpoints to `path`, lines to `out`.
    ///
    /// # Errors
    ///
    /// Those of [`check_writable`]: nothing is written yet.
    pub fn new(path: &Path, out: Output) -> Result<Self> {
        check_writable(path)?;
        Ok(Checkpoints {
            path: path.to_path_buf(),
            out,
            run: None,
            saved_at: None,
        })
    }

    /// The file.
    ///
    /// ```
    /// let path = std::env::temp_dir().join("ckpt-path-doc.safetensors");
    /// let c = dlrm_kernels::train::Checkpoints::new(&path, Default::default())?;
    /// assert_eq!(c.path(), path);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Save `model`, holding the stop handle's write lock.
    fn save(&mut self, model: &Dlrm) -> Result<()> {
        let _writing = self.run.as_ref().map(|(stop, _)| stop.hold());
        checkpoint::save(model, &self.path)?;
        self.saved_at = Some(model.steps());
        Ok(())
    }

    /// Whether `model` has steps of this run that are not saved.
    fn unsaved(&self, model: &Dlrm) -> bool {
        self.run
            .as_ref()
            .is_some_and(|&(_, start)| model.steps() > start)
            && self.saved_at != Some(model.steps())
    }
}

impl Observer for Checkpoints {
    fn start(&mut self, run: &RunInfo) -> Result<()> {
        self.run = Some((run.stop.clone(), run.start_step));
        Ok(())
    }

    fn evaluated(&mut self, model: &Dlrm, _: &Evaluation) -> Result<()> {
        if self.unsaved(model) {
            self.save(model)?;
        }
        Ok(())
    }

    fn stopping(&mut self, model: &Dlrm, _: StopReason) -> Result<()> {
        let path = self.path.display().to_string();
        let trained = self
            .run
            .as_ref()
            .is_some_and(|&(_, start)| model.steps() > start);
        let line = if !trained {
            "nothing trained, nothing saved".to_string()
        } else if self.unsaved(model) {
            self.save(model)?;
            format!("checkpoint saved to {path} (step {})", model.steps())
        } else {
            format!(
                "the checkpoint {path} is up to date (step {})",
                model.steps()
            )
        };
        self.out.line(&line);
        Ok(())
    }

    fn finished(&mut self, model: &Dlrm, _: &Summary) -> Result<()> {
        if self.unsaved(model) {
            self.save(model)?;
        }
        Ok(())
    }
}
