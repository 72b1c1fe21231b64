//! The trainer behind the DLRM reference's flags (feature `cli`): [`Args`] are the flags of
//! `dlrm_s_pytorch.py`, [`run`] trains as they say, [`main`] is a whole program (flags,
//! a clean stop on Ctrl-C and SIGTERM, exit status). `examples/dlrm.rs` is [`main`] with a
//! progress bar; another binary can offer the same command line the same way.
//!
//! Everything the flags alone decide is checked before anything runs (no data converted,
//! no file created): a value that cannot work is an [`Error::Usage`] naming the flag and
//! the value; a flag that would be ignored is one too; the files to write must be
//! creatable, the checkpoint to load readable, and the model must fit in memory.
//!
//! ```
//! use clap::Parser;
//! use dlrm_kernels::cli::{Args, Ui, run};
//! use dlrm_kernels::train::{Output, Stop};
//!
//! let args = Args::parse_from([
//!     "dlrm", "--data-generation", "random", "--arch-embedding-size", "50-50",
//!     "--arch-mlp-bot", "13-8-4", "--arch-mlp-top", "8-1", "--arch-sparse-feature-size", "4",
//!     "--mini-batch-size", "16", "--num-batches", "5", "--num-workers", "0",
//! ]);
//! let ui = Ui { out: Output::new(|_| {}), progress: None };
//! let summary = run(&args, &Stop::new(), ui)?;
//! assert_eq!(summary.steps, 5);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

mod flags;
mod plan;

use std::ffi::OsString;

use clap::Parser;

pub use flags::{Args, DataGeneration, DataRandomize};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::kernels::diagnostics::Diagnostics;
use crate::memory::{MemoryEstimate, human_bytes};
use crate::model::Dlrm;
use crate::threads::{self, Workers};
use crate::train::{
    Checkpoints, CsvLog, LogLines, Observer, Output, Stop, StopReason, Summary, TrainOptions,
    Trainer,
};
use plan::{Plan, check_flags, check_paths, flag_error};

/// Exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report an
/// interrupted command).
pub const EXIT_INTERRUPTED: u8 = 130;

impl Args {
    /// The model configuration the flags give: a preset's or the default model's, with the
    /// explicit flags over it (for a dataset, 26 tables of `--max-ind-range` rows).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for a size list that does not parse, or a bottom MLP whose input is
    /// not the dataset's 13 dense features.
    ///
    /// ```
    /// use clap::Parser;
    /// let a = dlrm_kernels::cli::Args::parse_from(["dlrm", "--preset", "small", "--max-ind-range", "500"]);
    /// assert_eq!(a.model_config()?.table_rows, vec![500; 8]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn model_config(&self) -> Result<crate::model::DlrmConfig> {
        Ok(Plan::from_args(self)?.cfg)
    }

    /// Lookups per bag of generated data: `--num-indices-per-lookup`, else the preset's
    /// (100 for `small`, as the reference benchmark; else 1).
    ///
    /// # Errors
    ///
    /// As [`Args::model_config`].
    ///
    /// ```
    /// use clap::Parser;
    /// let a = dlrm_kernels::cli::Args::parse_from(["dlrm", "--preset", "small"]);
    /// assert_eq!(a.lookups_per_bag()?, 100);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn lookups_per_bag(&self) -> Result<usize> {
        Ok(Plan::from_args(self)?.lookups)
    }

    /// Whether batches are made on a background thread beside `threads` training threads:
    /// as `--num-workers` says, else when a core is left beside them.
    ///
    /// ```
    /// use clap::Parser;
    /// let a = dlrm_kernels::cli::Args::parse_from(["dlrm", "--num-workers", "0"]);
    /// assert!(!a.background_loading(1));
    /// ```
    pub fn background_loading(&self, threads: usize) -> bool {
        match self.num_workers {
            Some(n) => n > 0,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()) > threads,
        }
    }
}

/// How a run talks to its user: where lines go, and an optional progress display (told
/// what the run does, as every [`Observer`]).
///
/// ```
/// use dlrm_kernels::cli::Ui;
/// use dlrm_kernels::train::Output;
/// let quiet = Ui { out: Output::new(|_| {}), progress: None };
/// # let _ = quiet;
/// ```
pub struct Ui {
    /// Where lines go.
    pub out: Output,
    /// A progress display (a terminal progress bar, say).
    pub progress: Option<Box<dyn Observer>>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui")
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// The whole program: parse `argv` (clap prints `--help` or a flag error and exits), make
/// the user interface with `ui`, stop cleanly on Ctrl-C or SIGTERM ([`stop_on_signals`]),
/// run; the exit status: 0, 1 after an error (printed to standard error), or
/// [`EXIT_INTERRUPTED`].
///
/// ```no_run
/// // A whole trainer program, as examples/dlrm.rs is without its progress bar:
/// use dlrm_kernels::cli::{self, Ui};
/// use dlrm_kernels::train::Output;
/// fn main() -> std::process::ExitCode {
///     let ui = |_: &cli::Args| Ui { out: Output::stdout(), progress: None };
///     std::process::ExitCode::from(cli::main(std::env::args_os(), ui))
/// }
/// ```
pub fn main<I, T>(argv: I, ui: impl FnOnce(&Args) -> Ui) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = Args::parse_from(argv);
    let ui = ui(&args);
    let stop = Stop::new();
    if let Err(e) = stop_on_signals(&stop) {
        eprintln!("warning: Ctrl-C and SIGTERM will stop the trainer at once: {e}");
    }
    match run(&args, &stop, ui) {
        Ok(summary) if summary.interrupted() => EXIT_INTERRUPTED,
        Ok(_) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// From now on SIGINT (Ctrl-C), SIGTERM and SIGHUP ask `stop` to stop after the current
/// step (saying so on standard error); a second signal ends the process at once with
/// [`EXIT_INTERRUPTED`], though never in the middle of writing a checkpoint (it waits on
/// [`Stop::hold`]). One handler per process.
///
/// # Errors
///
/// The handler could not be installed (one already is, or the OS refused).
///
/// ```no_run
/// let stop = dlrm_kernels::train::Stop::new();
/// dlrm_kernels::cli::stop_on_signals(&stop).expect("the only handler");
/// // ... a training loop that looks at stop.requested() after each step ...
/// ```
pub fn stop_on_signals(stop: &Stop) -> std::result::Result<(), ctrlc::Error> {
    let stop = stop.clone();
    ctrlc::set_handler(move || {
        if stop.request() == 1 {
            eprintln!("\nstopping after the current step (interrupt again to stop at once)");
        } else {
            // Not while a checkpoint is being written: wait for it.
            let _writing = stop.hold();
            eprintln!("\nstopped");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    })
}

/// Train (or, with `--inference-only true`, evaluate) as `args` say, stopping after the
/// current step when `stop` is asked to.
///
/// # Errors
///
/// [`Error::Usage`] naming the flag for what the flags alone get wrong (checked before
/// anything runs); the data's errors (a malformed line, with `--skip-malformed false`);
/// [`Error::Training`] for a step that failed (a NaN or infinite loss; a line then names the
/// last good checkpoint, when one is kept); I/O errors.
pub fn run(args: &Args, stop: &Stop, ui: Ui) -> Result<Summary> {
    check_flags(args)?;
    check_paths(args)?;
    let plan = Plan::from_args(args)?;
    plan.check_memory(args)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Decided here, on the main thread: a pinned worker sees only its own CPU.
    let background = args.background_loading(threads);
    let workers = threads::pool(threads, args.pin_threads)?;
    workers
        .pool
        .install(|| train(args, &plan, &workers, background, stop, ui))
}

/// The run, on the workers.
fn train(
    args: &Args,
    plan: &Plan,
    workers: &Workers,
    background: bool,
    stop: &Stop,
    ui: Ui,
) -> Result<Summary> {
    let out = ui.out.clone();
    let data = plan.open_data(args, &out)?;
    let mut model = Dlrm::new(plan.cfg.clone(), args.numpy_rand_seed)
        .map_err(|e| flag_error(args, plan.cfg.batch_size, e))?;
    if let Some(path) = &args.load_model {
        checkpoint::load_into(&mut model, path)?;
        out.line(&format!(
            "loaded {} (step {})",
            path.display(),
            model.steps()
        ));
    }
    out.line(&describe(&model, &*data, workers, background, args));
    let options = TrainOptions {
        epochs: args.nepochs,
        eval_every: Some(args.test_freq),
        report_every: args.print_freq.max(1),
        background_loading: background,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::with_source(model, data.into(), options)?
        .with_stop(stop.clone())
        .observe(LogLines::new(out.clone()));
    if let Some(path) = &args.metrics_csv {
        trainer = trainer.observe(CsvLog::new(path)?);
    }
    if let Some(path) = &args.save_model {
        trainer = trainer.observe(Checkpoints::new(path, out.clone())?);
    }
    if let Some(progress) = ui.progress {
        trainer = trainer.observe_boxed(progress);
    }
    if args.inference_only {
        let evals = trainer.evaluate()?.into_iter().collect();
        let stopped = stop.requested().then_some(StopReason::Interrupted);
        return Ok(Summary {
            evals,
            stopped,
            ..Summary::default()
        });
    }
    let summary = trainer.run();
    if let (Err(Error::Training { .. }), Some(path)) = (&summary, &args.save_model) {
        out.line(&format!("the last good checkpoint is {}", path.display()));
    }
    summary
}

/// The first lines: the kernels (CPU, backend, tile, bf16 path), the model, the threads and
/// the data.
fn describe(
    model: &Dlrm,
    data: &dyn crate::data::BatchSource,
    workers: &Workers,
    background: bool,
    args: &Args,
) -> String {
    use crate::data::Split;
    let c = model.config();
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
    let memory = MemoryEstimate::of(c).map_or(String::new(), |e| {
        format!(
            " ({} tables, {} in all)",
            human_bytes(e.tables),
            human_bytes(e.total())
        )
    });
    let batches = if args.inference_only {
        format!("inference only: {} test batches", data.batches(Split::Test))
    } else {
        format!(
            "{} training batches per epoch, {} test batches",
            data.batches(Split::Train),
            data.batches(Split::Test)
        )
    };
    let pinned = match &workers.pinned {
        Some(cpus) => {
            let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
            format!("pinned to CPUs {}", cpus.join(", "))
        }
        None => "not pinned".into(),
    };
    format!(
        "{}\nDLRM {}: bottom {}, top {}, {} tables, dim {}, {} interaction, batch {}, lr {}{memory}\n\
         {} threads ({pinned}); {batches}, data loaded {}",
        Diagnostics::get(),
        c.precision,
        list(&c.bottom_mlp),
        list(&c.top_mlp),
        c.table_rows.len(),
        c.embedding_dim,
        c.interaction,
        c.batch_size,
        c.lr.base_lr,
        workers.pool.current_num_threads(),
        if background {
            "on a background thread"
        } else {
            "in line"
        },
    )
}
