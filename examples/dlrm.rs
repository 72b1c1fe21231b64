//! Train DLRM on the CPU with `dlrm-kernels`.
//!
//! ```sh
//! cargo run --release --example dlrm                       # synthetic data, about 30 s
//! cargo run --release --example dlrm -- --preset small --data-generation random --num-batches 50
//! cargo run --release --example dlrm -- --preset kaggle --data-generation dataset \
//!     --raw-data-file ./criteo/train.txt --max-ind-range 1000000 --test-freq 2000
//! cargo run --release --example dlrm -- --help             # every flag
//! ```
//!
//! Flags follow the DLRM reference's `dlrm_s_pytorch.py`; boolean flags take a real boolean
//! (`--arch-interaction-itself true`), unlike the reference where "False" parses as true.
//! Flags, output paths and the memory the model needs are checked before anything runs.
//! Ctrl-C or SIGTERM stops training after the current step, saves the checkpoint, prints
//! the summary and exits with status 130; a second signal stops at once (never in the
//! middle of writing a checkpoint).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser, ValueEnum};
use dlrm_kernels::checkpoint;
use dlrm_kernels::data::binary::{self, BinaryReader};
use dlrm_kernels::data::criteo::{self, OnMalformed};
use dlrm_kernels::data::prefetch::Prefetcher;
use dlrm_kernels::data::random::{RandomData, RandomDataConfig};
use dlrm_kernels::data::synthetic::{SyntheticConfig, SyntheticData};
use dlrm_kernels::data::{MiniBatch, Split};
use dlrm_kernels::interaction::InteractionOp;
use dlrm_kernels::kernels::Isa;
use dlrm_kernels::loss::Loss;
use dlrm_kernels::memory::{self, MemoryEstimate, Setting, human_bytes};
use dlrm_kernels::metrics::{accuracy, roc_auc};
use dlrm_kernels::model::{Dlrm, DlrmConfig, Precision, StepTimings};
use dlrm_kernels::optim::LrPolicy;
use dlrm_kernels::optim::{Optimizers, TableOptimizer};
use dlrm_kernels::threads::{self, Workers};
use indicatif::{ProgressBar, ProgressStyle};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Command-line flags (names as in the DLRM reference).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "dlrm",
    about = "Train DLRM on the CPU with dlrm-kernels",
    version
)]
struct Args {
    /// A configuration from DESIGN.md: small (8 x 1M tables, dim 64), kaggle, terabyte,
    /// mlperf. Explicit flags override its values.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Embedding dimension (must equal the bottom MLP's last size).
    #[arg(long)]
    arch_sparse_feature_size: Option<usize>,
    /// Table rows, dash-separated, e.g. 1000000-1000000 (ignored for datasets).
    #[arg(long)]
    arch_embedding_size: Option<String>,
    /// Bottom MLP sizes, dense input first, e.g. 13-512-256-64.
    #[arg(long)]
    arch_mlp_bot: Option<String>,
    /// Top MLP sizes after the interaction, ending in 1, e.g. 512-256-1.
    #[arg(long)]
    arch_mlp_top: Option<String>,
    /// Feature interaction.
    #[arg(long, value_enum, default_value_t = InteractionArg::Dot)]
    arch_interaction_op: InteractionArg,
    /// Whether the dot interaction includes each feature with itself.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    arch_interaction_itself: bool,
    /// Where batches come from: the reference's random generator, a learnable synthetic
    /// generator, or a Criteo dataset.
    #[arg(long, value_enum, default_value_t = DataGeneration::Synthetic)]
    data_generation: DataGeneration,
    /// Which Criteo dataset (with --data-generation dataset).
    #[arg(long, value_enum, default_value_t = DataSet::Kaggle)]
    data_set: DataSet,
    /// Raw Criteo text: Kaggle's train.txt, or the path prefix of Terabyte's day_N files.
    #[arg(long)]
    raw_data_file: Option<PathBuf>,
    /// Prefix of the MLPerf binary files (<prefix>_train.bin and <prefix>_test.bin); made
    /// from --raw-data-file when missing (default prefix: the raw file's path + _processed).
    #[arg(long)]
    processed_data_file: Option<PathBuf>,
    /// Rows per table for datasets: categorical value mod this (required for datasets); also
    /// caps preset table sizes.
    #[arg(long, default_value_t = -1)]
    max_ind_range: i64,
    /// Lookups per bag (random and synthetic data): the bag length, or its upper bound.
    #[arg(long)]
    num_indices_per_lookup: Option<usize>,
    /// Whether every bag has exactly --num-indices-per-lookup lookups (random data).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    num_indices_per_lookup_fixed: bool,
    /// Round random targets to 0/1.
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    round_targets: bool,
    /// Samples per training step.
    #[arg(long)]
    mini_batch_size: Option<usize>,
    /// Training steps per epoch (datasets: at most the data's; 0 = all of it).
    #[arg(long)]
    num_batches: Option<usize>,
    /// Passes over the training data.
    #[arg(long, default_value_t = 1)]
    nepochs: usize,
    /// Learning rate (after warm-up, before decay).
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    lr_num_warmup_steps: u64,
    /// Step at which polynomial decay starts.
    #[arg(long, default_value_t = 0)]
    lr_decay_start_step: u64,
    /// Steps of polynomial (power 2) decay (0: none).
    #[arg(long, default_value_t = 0)]
    lr_num_decay_steps: u64,
    /// Loss on the click logit.
    #[arg(long, value_enum, default_value_t = LossArg::Bce)]
    loss_function: LossArg,
    /// Optimizer of the embedding tables (the MLPs use SGD).
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    optimizer: OptimizerArg,
    /// Evaluate every this many steps (0: ten times over the run); also once before training.
    #[arg(long, default_value_t = 0)]
    test_freq: usize,
    /// Samples per evaluation batch.
    #[arg(long)]
    test_mini_batch_size: Option<usize>,
    /// Evaluation batches (random and synthetic data; datasets use their whole test split).
    #[arg(long)]
    test_num_batches: Option<usize>,
    /// Refresh the progress line every this many steps.
    #[arg(long, default_value_t = 10)]
    print_freq: usize,
    /// Save a checkpoint (safetensors) here at every evaluation, at the end, and when a
    /// signal (Ctrl-C, SIGTERM) stops training.
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// Start from this checkpoint.
    #[arg(long)]
    load_model: Option<PathBuf>,
    /// Only evaluate (with --load-model).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    inference_only: bool,
    /// Seed of the model initialisation and of generated data.
    #[arg(long, default_value_t = 123)]
    numpy_rand_seed: u64,
    /// Arithmetic and storage precision.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Pin worker i to the i-th CPU this process may use (Linux, when there are at least
    /// --threads of them), so each worker keeps its caches. For a machine given to this run
    /// alone: two runs pinned to the same CPUs halve each other, and a background loader
    /// (--num-workers 1) shares the first worker's CPU.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pin_threads: bool,
    /// Data loading threads: 1 produces batches ahead on a background thread, 0 produces each
    /// in line when it is needed (its time then counts as data time, as in the reference,
    /// whose loader has no workers by default). Default: 1 if a core is left beside
    /// --threads, else 0 (a background loader could then only take CPU from training).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    num_workers: Option<u8>,
    /// Write the metrics over time to this CSV file.
    #[arg(long)]
    metrics_csv: Option<PathBuf>,
    /// Order of a dataset's training batches: as stored, or whole batches shuffled each
    /// epoch (seeded by --numpy-rand-seed).
    #[arg(long, value_enum, default_value_t = DataRandomize::None)]
    data_randomize: DataRandomize,
    /// Skip malformed lines of raw data (counted in the summary) instead of stopping.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    skip_malformed: bool,
    /// Show the progress bar (on a terminal).
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    progress: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Preset {
    Small,
    Kaggle,
    Terabyte,
    Mlperf,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum InteractionArg {
    Dot,
    Cat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum DataGeneration {
    Random,
    Synthetic,
    Dataset,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum DataSet {
    Kaggle,
    Terabyte,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum DataRandomize {
    None,
    Total,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LossArg {
    Bce,
    Mse,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum OptimizerArg {
    Sgd,
    Rwsadagrad,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum PrecisionArg {
    Fp32,
    Bf16,
}

/// Category counts of the Criteo Kaggle dataset (the reference's `day_fea_count`).
const KAGGLE_ROWS: [usize; 26] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
    5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
];

fn main() -> ExitCode {
    ExitCode::from(trainer_main(std::env::args_os()))
}

/// Exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report an
/// interrupted command).
const EXIT_INTERRUPTED: u8 = 130;

/// The trainer: parse the flags, install the signal handler, run; the exit status.
fn trainer_main<I, T>(argv: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(argv);
    let mut out = Reporter::new(args.progress);
    let stop = Stop::default();
    if let Err(e) = stop.install() {
        eprintln!("warning: Ctrl-C and SIGTERM will stop the trainer at once: {e}");
    }
    match run(&args, &mut out, &stop) {
        Ok(summary) if summary.interrupted => EXIT_INTERRUPTED,
        Ok(_) => 0,
        Err(e) => {
            out.finish();
            eprintln!("error: {e}");
            1
        }
    }
}

/// Stopping on SIGINT (Ctrl-C) or SIGTERM: the first signal asks the run to stop after the
/// current step (saving the checkpoint and printing the summary); a second one stops the
/// process at once, though never in the middle of writing a checkpoint (it waits for the
/// write to finish, so no temporary file is left behind).
#[derive(Clone, Default)]
struct Stop(Arc<StopState>);

#[derive(Default)]
struct StopState {
    /// Signals received.
    signals: AtomicUsize,
    /// Held while a checkpoint is written.
    saving: Mutex<()>,
}

impl Stop {
    /// Handle SIGINT and SIGTERM (and SIGHUP) in this process from now on.
    fn install(&self) -> Result<(), ctrlc::Error> {
        let state = Arc::clone(&self.0);
        ctrlc::set_handler(move || {
            if state.signals.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!("\nstopping after the current step (interrupt again to stop at once)");
            } else {
                // Not while a checkpoint is being written: wait for it.
                let _saving = state.saving.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!("\nstopped");
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        })
    }

    /// Whether a signal asked the run to stop.
    fn requested(&self) -> bool {
        self.0.signals.load(Ordering::SeqCst) > 0
    }

    /// Ask the run to stop, as a signal does.
    #[cfg(test)]
    fn request(&self) {
        self.0.signals.fetch_add(1, Ordering::SeqCst);
    }

    /// Save `model` to `path` where a second signal cannot cut the write short.
    fn save(&self, model: &Dlrm, path: &Path) -> Result<()> {
        let _saving = self.0.saving.lock().unwrap_or_else(|e| e.into_inner());
        checkpoint::save(model, path)?;
        Ok(())
    }
}

/// What a run achieved (returned for tests; printed as the summary).
#[derive(Debug, Clone, Default)]
struct Summary {
    steps: u64,
    evals: Vec<Eval>,
    step_ms: f64,
    step_ms_with_data: f64,
    /// Stopped early by SIGINT or SIGTERM.
    interrupted: bool,
}

/// The whole story: flags, data, model, training loop, report.
fn run(args: &Args, out: &mut Reporter, stop: &Stop) -> Result<Summary> {
    // Everything the flags alone can tell is checked before anything runs: their values,
    // the output paths, the memory the model will need.
    check_flags(args)?;
    check_paths(args)?;
    let shape = Shape::from_args(args)?;
    check_memory(args, &shape)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Decided here, on the main thread: a pinned worker sees only its own CPU.
    let background = background_loading(args, threads);
    let workers = threads::pool(threads, args.pin_threads)?;
    workers.pool.install(|| {
        let data = Data::open(args, out)?;
        let cfg = model_config(args, &shape, &data.table_rows, data.dense_features)?;
        let mut summary = Summary::default();
        if stop.requested() {
            out.line("interrupted before training: nothing trained, nothing saved".into());
            summary.interrupted = true;
            return Ok(summary);
        }
        let mut model = match &args.load_model {
            Some(path) => {
                let mut m = Dlrm::new(cfg, args.numpy_rand_seed)
                    .map_err(|e| flag_error(args, shape.batch, e))?;
                checkpoint::load_into(&mut m, path)?;
                out.line(format!("loaded {} (step {})", path.display(), m.steps()));
                m
            }
            None => Dlrm::new(cfg, args.numpy_rand_seed)
                .map_err(|e| flag_error(args, shape.batch, e))?,
        };
        out.line(describe(&model, &data, &workers, background, args));
        let mut csv = Csv::create(args.metrics_csv.as_deref())?;
        if args.inference_only {
            evaluate_and_report(&mut model, &data, 0, out, &mut csv, &mut summary, stop)?;
            summary.interrupted = stop.requested();
            return Ok(summary);
        }
        train(
            args,
            &mut model,
            &data,
            background,
            out,
            &mut csv,
            &mut summary,
            stop,
        )?;
        Ok(summary)
    })
}

/// The training loop over epochs and batches (loaded in the background or in line), with
/// evaluation, checkpoints and the summary. A signal stops it after the current step: the
/// checkpoint is saved (if one is asked for and the last one is older) and the summary
/// printed.
#[allow(clippy::too_many_arguments)]
fn train(
    args: &Args,
    model: &mut Dlrm,
    data: &Data,
    background: bool,
    out: &mut Reporter,
    csv: &mut Csv,
    summary: &mut Summary,
    stop: &Stop,
) -> Result<()> {
    let per_epoch = data.train_batches;
    let total = per_epoch * args.nepochs;
    let test_freq = if args.test_freq == 0 {
        total.div_ceil(10).max(1)
    } else {
        args.test_freq
    };
    evaluate_and_report(model, data, 0, out, csv, summary, stop)?;
    out.start(total as u64);
    model.reset_timings();
    let (mut waited, mut run_time, mut stepped) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut running_loss, mut running_n) = (0.0, 0usize);
    let start_step = model.steps();
    // The step of the last checkpoint written (none yet).
    let mut saved_at = None;
    for epoch in 0..args.nepochs {
        if stop.requested() {
            break;
        }
        let epoch_batches = data.train_epoch(epoch, args.data_randomize, args.numpy_rand_seed);
        let mut batches = Prefetcher::new(epoch_batches, background, 4);
        let epoch_start = Instant::now();
        let mut it = 0;
        for batch in batches.by_ref() {
            let batch = batch?;
            let step = model.steps() + 1;
            let step_start = Instant::now();
            let loss = model.train_step(&batch);
            stepped += step_start.elapsed();
            let loss = loss.map_err(|e| -> Error {
                let kept = args.save_model.as_ref().map_or(String::new(), |p| {
                    format!("; the last good checkpoint is {}", p.display())
                });
                format!("training stopped at iteration {step} (epoch {epoch}): {e}{kept}").into()
            })?;
            running_loss += loss;
            running_n += 1;
            it += 1;
            let done = (model.steps() - start_step) as usize;
            if done.is_multiple_of(args.print_freq.max(1)) || done == total {
                let elapsed = epoch_start.elapsed().as_secs_f64();
                let ms = 1e3 * elapsed / it as f64;
                let sps = (it * batch.len()) as f64 / elapsed;
                let avg = running_loss / running_n as f64;
                out.progress(
                    done as u64,
                    format!(
                        "{ms:.1} ms/it | {sps:.0} samples/s | loss {avg:.5} | lr {:.2e}",
                        model.learning_rate()
                    ),
                );
                csv.row(
                    model.steps(),
                    epoch,
                    Some(avg),
                    model.learning_rate(),
                    Some(ms),
                    None,
                )?;
                running_loss = 0.0;
                running_n = 0;
            }
            if done.is_multiple_of(test_freq) || done == total {
                evaluate_and_report(model, data, epoch, out, csv, summary, stop)?;
                if let Some(path) = &args.save_model {
                    stop.save(model, path)?;
                    saved_at = Some(model.steps());
                }
            }
            if stop.requested() {
                break;
            }
        }
        waited += batches.waited();
        run_time += epoch_start.elapsed();
    }
    out.finish();
    summary.steps = model.steps() - start_step;
    if stop.requested() {
        summary.interrupted = true;
        let saved = match &args.save_model {
            Some(_) if model.steps() == start_step => "; nothing trained, nothing saved".into(),
            Some(path) if saved_at != Some(model.steps()) => {
                stop.save(model, path)?;
                format!("; checkpoint saved to {}", path.display())
            }
            Some(path) => format!("; the checkpoint {} is up to date", path.display()),
            None => String::new(),
        };
        out.line(format!(
            "interrupted: stopped after step {}{saved}",
            model.steps()
        ));
    }
    let t = model.timings();
    let steps = t.steps.max(1) as f64;
    summary.step_ms = stepped.as_secs_f64() * 1e3 / steps;
    summary.step_ms_with_data = (stepped + waited).as_secs_f64() * 1e3 / steps;
    out.line(describe_timings(
        &t,
        stepped,
        waited,
        run_time,
        data.skipped,
    ));
    Ok(())
}

/// Whether data is loaded on a background thread: as `--num-workers` says, else when a core
/// is left beside the `threads` training threads.
fn background_loading(args: &Args, threads: usize) -> bool {
    match args.num_workers {
        Some(n) => n > 0,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()) > threads,
    }
}

/// Evaluate, report the line, log it to the CSV and keep it in the summary; nothing if a
/// signal stopped the evaluation.
fn evaluate_and_report(
    model: &mut Dlrm,
    data: &Data,
    epoch: usize,
    out: &mut Reporter,
    csv: &mut Csv,
    summary: &mut Summary,
    stop: &Stop,
) -> Result<()> {
    let Some(eval) = evaluate(model, data, stop)? else {
        return Ok(());
    };
    out.line(eval.describe(model.steps()));
    let lr = model.learning_rate();
    csv.row(model.steps(), epoch, None, lr, None, Some(&eval))?;
    summary.evals.push(eval);
    Ok(())
}

/// Evaluation over the whole test set: loss, accuracy, AUC.
#[derive(Debug, Clone, Copy, Default)]
struct Eval {
    loss: f64,
    accuracy: f64,
    auc: f64,
    samples: usize,
}

impl Eval {
    fn describe(&self, step: u64) -> String {
        format!(
            "test at step {step}: loss {:.5}, accuracy {:.2} %, AUC {:.4} ({} samples)",
            self.loss,
            100.0 * self.accuracy,
            self.auc,
            self.samples
        )
    }
}

/// The evaluation, or `None` if a signal asked to stop before it was done.
fn evaluate(model: &mut Dlrm, data: &Data, stop: &Stop) -> Result<Option<Eval>> {
    let loss_fn = model.config().loss;
    let (mut probs, mut targets, mut loss_sum) = (Vec::new(), Vec::new(), 0.0);
    let mut p = Vec::new();
    for batch in data.test_batches() {
        if stop.requested() {
            return Ok(None);
        }
        let batch = batch?;
        model.predict(&batch, &mut p)?;
        loss_sum += loss_fn.mean(model.logits(), &batch.targets)? * batch.len() as f64;
        probs.extend_from_slice(&p);
        targets.extend_from_slice(&batch.targets);
    }
    let n = probs.len().max(1);
    Ok(Some(Eval {
        loss: loss_sum / n as f64,
        accuracy: accuracy(&probs, &targets),
        auc: roc_auc(&probs, &targets).unwrap_or(f64::NAN),
        samples: probs.len(),
    }))
}

/// Where the batches come from.
#[derive(Clone)]
enum Source {
    Random(RandomData),
    Synthetic(SyntheticData),
    Binary(Arc<BinaryReader>),
}

impl Source {
    fn batch(&self, i: usize) -> Result<MiniBatch> {
        Ok(match self {
            Source::Random(d) => d.batch(i as u64),
            Source::Synthetic(d) => d.batch(i as u64),
            Source::Binary(r) => r.batch(i)?,
        })
    }
}

/// Training and test data and the table sizes they imply.
struct Data {
    train: Source,
    test: Source,
    train_batches: usize,
    test_batches: usize,
    table_rows: Vec<usize>,
    dense_features: usize,
    skipped: u64,
}

impl Data {
    fn open(args: &Args, out: &mut Reporter) -> Result<Data> {
        let shape = Shape::from_args(args)?;
        match args.data_generation {
            DataGeneration::Random | DataGeneration::Synthetic => {
                let batches = args
                    .num_batches
                    .filter(|&n| n > 0)
                    .unwrap_or(shape.default_batches);
                let test_batches = args.test_num_batches.unwrap_or((batches / 10).clamp(1, 50));
                let make = |seed: u64, batch: usize| -> Result<Source> {
                    Ok(if args.data_generation == DataGeneration::Random {
                        Source::Random(RandomData::new(RandomDataConfig {
                            dense_features: shape.bottom[0],
                            table_rows: shape.rows.clone(),
                            batch_size: batch,
                            indices_per_lookup: shape.lookups,
                            indices_per_lookup_fixed: args.num_indices_per_lookup_fixed,
                            round_targets: args.round_targets,
                            seed,
                        })?)
                    } else {
                        Source::Synthetic(SyntheticData::new(SyntheticConfig {
                            dense_features: shape.bottom[0],
                            table_rows: shape.rows.clone(),
                            batch_size: batch,
                            lookups: shape.lookups,
                            seed,
                            ..SyntheticConfig::default()
                        })?)
                    })
                };
                // The test set comes from the same hidden model, different samples.
                let test_size = args.test_mini_batch_size.unwrap_or(shape.batch);
                let train = make(args.numpy_rand_seed, shape.batch)?;
                let test = match make(args.numpy_rand_seed, test_size)? {
                    Source::Synthetic(d) => Source::Synthetic(d),
                    Source::Random(_) => make(args.numpy_rand_seed.wrapping_add(1), test_size)?,
                    b => b,
                };
                Ok(Data {
                    train,
                    test,
                    train_batches: batches,
                    test_batches,
                    table_rows: shape.rows,
                    dense_features: shape.bottom[0],
                    skipped: 0,
                })
            }
            DataGeneration::Dataset => Self::open_dataset(args, &shape, out),
        }
    }

    fn open_dataset(args: &Args, shape: &Shape, out: &mut Reporter) -> Result<Data> {
        if args.max_ind_range <= 0 || args.max_ind_range > u32::MAX as i64 {
            return Err(
                "--max-ind-range is required with --data-generation dataset: categorical \
                        values are hashed into that many rows per table (e.g. 1000000)"
                    .into(),
            );
        }
        let range = args.max_ind_range as u32;
        let prefix = match (&args.processed_data_file, &args.raw_data_file) {
            (Some(p), _) => p.clone(),
            (None, Some(raw)) => PathBuf::from(format!("{}_processed", raw.display())),
            (None, None) => {
                return Err(
                    "--data-generation dataset needs --raw-data-file or --processed-data-file"
                        .into(),
                );
            }
        };
        let file =
            |split: Split| PathBuf::from(format!("{}_{}.bin", prefix.display(), split.name()));
        let mut skipped = 0;
        for split in [Split::Train, Split::Test] {
            if file(split).exists() {
                continue;
            }
            let Some(raw) = &args.raw_data_file else {
                return Err(format!(
                    "{} is missing and no --raw-data-file was given to make it",
                    file(split).display()
                )
                .into());
            };
            let dataset = match args.data_set {
                DataSet::Kaggle => criteo::Dataset::Kaggle,
                DataSet::Terabyte => criteo::Dataset::Terabyte {
                    days: count_days(raw)?,
                },
            };
            out.line(format!(
                "converting {} ({}) to {}",
                raw.display(),
                split.name(),
                file(split).display()
            ));
            let t = Instant::now();
            let parts = criteo::split_parts(dataset, raw, split)?;
            let on_bad = if args.skip_malformed {
                OnMalformed::Skip
            } else {
                OnMalformed::Fail
            };
            let (n, bad) = binary::convert(parts, on_bad, &file(split))?;
            skipped += bad;
            out.line(format!(
                "  {n} samples in {:.1} s ({:.2} M lines/s){}",
                t.elapsed().as_secs_f64(),
                (n + bad) as f64 / t.elapsed().as_secs_f64() / 1e6,
                if bad > 0 {
                    format!(", {bad} malformed lines skipped")
                } else {
                    String::new()
                }
            ));
        }
        let train = BinaryReader::open(&file(Split::Train), shape.batch, range)?;
        let test = BinaryReader::open(
            &file(Split::Test),
            args.test_mini_batch_size.unwrap_or(shape.batch),
            range,
        )?;
        let available = train.batches();
        let train_batches = match args.num_batches {
            Some(n) if n > 0 => n.min(available),
            _ => available,
        };
        let test_batches = test.batches();
        Ok(Data {
            train: Source::Binary(Arc::new(train)),
            test: Source::Binary(Arc::new(test)),
            train_batches,
            test_batches,
            table_rows: vec![range as usize; criteo::SPARSE],
            dense_features: criteo::DENSE,
            skipped,
        })
    }

    /// This epoch's training batches (generated data: fresh batches every epoch).
    fn train_epoch(
        &self,
        epoch: usize,
        randomize: DataRandomize,
        seed: u64,
    ) -> impl Iterator<Item = dlrm_kernels::Result<MiniBatch>> + Send + 'static {
        let source = self.train.clone();
        let n = self.train_batches;
        // Generated data: fresh batches every epoch. A dataset: its batches, in order or
        // (--data-randomize total) as whole batches shuffled anew each epoch.
        let order: Vec<usize> = match &source {
            Source::Binary(r) => {
                let shuffle = (randomize == DataRandomize::Total).then_some(seed ^ epoch as u64);
                r.order(shuffle).into_iter().take(n).collect()
            }
            _ => (epoch * n..(epoch + 1) * n).collect(),
        };
        order.into_iter().map(move |i| {
            source
                .batch(i)
                .map_err(|e| match e.downcast::<dlrm_kernels::Error>() {
                    Ok(e) => *e,
                    Err(e) => dlrm_kernels::Error::Config(e.to_string()),
                })
        })
    }

    /// The test batches (the same every evaluation).
    fn test_batches(&self) -> impl Iterator<Item = Result<MiniBatch>> + '_ {
        // Synthetic test samples are drawn far from the training stream.
        let offset = if matches!(self.test, Source::Synthetic(_)) {
            1 << 40
        } else {
            0
        };
        (0..self.test_batches).map(move |i| self.test.batch(offset + i))
    }
}

/// Number of `<prefix>_N` day files present.
fn count_days(prefix: &Path) -> Result<usize> {
    let days = (0..)
        .take_while(|d| PathBuf::from(format!("{}_{d}", prefix.display())).exists())
        .count();
    if days < 2 {
        return Err(format!(
            "found {days} Terabyte day files {}_N; at least 2 are needed",
            prefix.display()
        )
        .into());
    }
    Ok(days)
}

/// The model's shape and the defaults that depend on the preset.
struct Shape {
    bottom: Vec<usize>,
    top: Vec<usize>,
    rows: Vec<usize>,
    dim: usize,
    batch: usize,
    lookups: usize,
    lr: f32,
    default_batches: usize,
}

fn sizes(flag: &str, s: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split('-')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("--{flag} {s:?}: expected sizes like 13-512-256"))
        })
        .collect::<Result<_, _>>()?;
    if v.contains(&0) {
        return Err(format!("--{flag} {s:?}: every size must be at least 1").into());
    }
    Ok(v)
}

impl Shape {
    fn from_args(a: &Args) -> Result<Shape> {
        let base = match a.preset {
            None => Shape {
                // The default: a small model that learns the synthetic data in about 30 s
                // on two cores.
                bottom: vec![13, 512, 256, 64],
                top: vec![512, 256, 1],
                rows: vec![100_000; 8],
                dim: 64,
                batch: 512,
                lookups: 1,
                lr: 0.1,
                default_batches: 3500,
            },
            Some(p) => {
                let c = match p {
                    Preset::Small => DlrmConfig::small(),
                    Preset::Kaggle => DlrmConfig::kaggle(KAGGLE_ROWS.to_vec()),
                    Preset::Terabyte => DlrmConfig::terabyte(vec![10_000_000; 26]),
                    Preset::Mlperf => DlrmConfig::mlperf(vec![40_000_000; 26]),
                };
                // The small config's bottom input is 512 wide in the reference benchmark.
                Shape {
                    bottom: c.bottom_mlp,
                    top: c.top_mlp,
                    rows: c.table_rows,
                    dim: c.embedding_dim,
                    batch: c.batch_size,
                    lookups: if p == Preset::Small { 100 } else { 1 },
                    lr: 0.1,
                    default_batches: 100,
                }
            }
        };
        let mut s = base;
        if let Some(v) = &a.arch_mlp_bot {
            s.bottom = sizes("arch-mlp-bot", v)?;
        }
        if let Some(v) = &a.arch_mlp_top {
            s.top = sizes("arch-mlp-top", v)?;
        }
        if let Some(v) = &a.arch_embedding_size {
            s.rows = sizes("arch-embedding-size", v)?;
        }
        if let Some(v) = a.arch_sparse_feature_size {
            s.dim = v;
        }
        if let Some(v) = a.mini_batch_size {
            s.batch = v;
        }
        if let Some(v) = a.num_indices_per_lookup {
            s.lookups = v;
        }
        if let Some(v) = a.learning_rate {
            s.lr = v;
        }
        if a.max_ind_range > 0 {
            for r in &mut s.rows {
                *r = (*r).min(a.max_ind_range as usize);
            }
        }
        if s.bottom.is_empty() {
            return Err("--arch-mlp-bot is empty".into());
        }
        Ok(s)
    }
}

/// The model configuration: the shape from the flags, the tables and dense features from
/// the data.
fn model_config(
    a: &Args,
    s: &Shape,
    table_rows: &[usize],
    dense_features: usize,
) -> Result<DlrmConfig> {
    if s.bottom[0] != dense_features {
        return Err(format!(
            "--arch-mlp-bot starts with {} inputs but the data has {} dense features",
            s.bottom[0], dense_features
        )
        .into());
    }
    Ok(DlrmConfig {
        bottom_mlp: s.bottom.clone(),
        top_mlp: s.top.clone(),
        table_rows: table_rows.to_vec(),
        embedding_dim: s.dim,
        interaction: match a.arch_interaction_op {
            InteractionArg::Dot => InteractionOp::Dot,
            InteractionArg::Cat => InteractionOp::Cat,
        },
        interaction_itself: a.arch_interaction_itself,
        precision: match a.precision {
            PrecisionArg::Fp32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        },
        batch_size: s.batch,
        loss: match a.loss_function {
            LossArg::Bce => Loss::Bce,
            LossArg::Mse => Loss::Mse,
        },
        optimizers: Optimizers {
            tables: match a.optimizer {
                OptimizerArg::Sgd => TableOptimizer::Sgd,
                OptimizerArg::Rwsadagrad => TableOptimizer::RowwiseAdagrad,
            },
            ..Optimizers::default()
        },
        lr: LrPolicy {
            base_lr: s.lr,
            warmup_steps: a.lr_num_warmup_steps,
            decay_start_step: a.lr_decay_start_step,
            decay_steps: a.lr_num_decay_steps,
        },
    })
}

/// Flag values that cannot work, and flags that would be ignored, as errors naming the
/// flag and its value, before anything runs.
fn check_flags(a: &Args) -> Result<()> {
    let positive = [
        ("--mini-batch-size", a.mini_batch_size),
        ("--test-mini-batch-size", a.test_mini_batch_size),
        ("--test-num-batches", a.test_num_batches),
        ("--threads", a.threads),
        ("--num-indices-per-lookup", a.num_indices_per_lookup),
        ("--arch-sparse-feature-size", a.arch_sparse_feature_size),
        ("--nepochs", Some(a.nepochs)),
    ];
    for (flag, value) in positive {
        if value == Some(0) {
            return Err(format!("{flag} must be at least 1, got 0").into());
        }
    }
    if let Some(lr) = a.learning_rate.filter(|lr| !lr.is_finite()) {
        return Err(format!("--learning-rate must be a finite number, got {lr}").into());
    }
    let generated = match a.data_generation {
        DataGeneration::Random => Some("random"),
        DataGeneration::Synthetic => Some("synthetic"),
        DataGeneration::Dataset => None,
    };
    if let Some(kind) = generated {
        for (flag, given) in [
            ("--raw-data-file", a.raw_data_file.is_some()),
            ("--processed-data-file", a.processed_data_file.is_some()),
        ] {
            if given {
                return Err(format!(
                    "{flag} is only read with --data-generation dataset (this run would \
                     train on {kind} data)"
                )
                .into());
            }
        }
    } else if a.max_ind_range <= 0 || a.max_ind_range > u32::MAX as i64 {
        return Err(format!(
            "--max-ind-range is required with --data-generation dataset, between 1 and {} \
             (got {}): categorical values are hashed into that many rows per table \
             (e.g. 1000000)",
            u32::MAX,
            a.max_ind_range
        )
        .into());
    }
    if a.inference_only && a.load_model.is_none() {
        return Err(
            "--inference-only true needs --load-model: without it there is no \
                    trained model to evaluate"
                .into(),
        );
    }
    Ok(())
}

/// The files the run reads or writes, checked before anything runs: the checkpoint to load
/// exists; a checkpoint or CSV to write can be created (not a directory, in a directory
/// that exists and takes new files, writable if it exists).
fn check_paths(a: &Args) -> Result<()> {
    if let Some(p) = &a.load_model
        && let Err(e) = File::open(p).and_then(|f| f.metadata())
    {
        return Err(format!("--load-model {}: {e}", p.display()).into());
    }
    if let Some(p) = a.load_model.as_ref().filter(|p| p.is_dir()) {
        return Err(format!("--load-model {}: is a directory", p.display()).into());
    }
    for (flag, path) in [
        ("--save-model", &a.save_model),
        ("--metrics-csv", &a.metrics_csv),
    ] {
        if let Some(path) = path {
            check_output(flag, path)?;
        }
    }
    Ok(())
}

/// `path` can be written by the end of the run: see [`check_paths`]. Changes nothing.
fn check_output(flag: &str, path: &Path) -> Result<()> {
    let bad = |why: String| -> Error { format!("{flag} {}: {why}", path.display()).into() };
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
    // The checkpoint's temporary file, or the CSV, is a new file in that directory.
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

/// Refuse, before the data is prepared and anything allocated, a model that would not fit
/// in the memory available: tables, MLPs, the batch's activations and gradients (at the
/// larger of the training and test batch), and the data batches in flight.
fn check_memory(a: &Args, shape: &Shape) -> Result<()> {
    let (rows, dense, lookups) = match a.data_generation {
        DataGeneration::Dataset => (
            vec![a.max_ind_range as usize; criteo::SPARSE],
            criteo::DENSE,
            1,
        ),
        _ => (shape.rows.clone(), shape.bottom[0], shape.lookups),
    };
    let mut cfg = model_config(a, shape, &rows, dense)?;
    cfg.batch_size = cfg.batch_size.max(a.test_mini_batch_size.unwrap_or(0));
    // A batch in flight: dense features and target (f32), indices and offsets (i64) per
    // table; up to 6 at once (4 queued, one being made, one training).
    let per_sample = (rows.len() as u64)
        .checked_mul((lookups as u64).saturating_add(1).saturating_mul(8))
        .and_then(|x| x.checked_add((dense as u64 + 1) * 4))
        .and_then(|x| x.checked_mul(6))
        .ok_or_else(|| format!("--num-indices-per-lookup {lookups}: too large"))?;
    memory::check_against(&cfg, memory::available(), per_sample)
        .map_err(|e| flag_error(a, shape.batch, e))?;
    Ok(())
}

/// A library error about a setting (too large for memory) said with the flag that sets it;
/// other errors as they are.
fn flag_error(a: &Args, train_batch: usize, e: dlrm_kernels::Error) -> Error {
    let dlrm_kernels::Error::TooLarge {
        setting,
        value,
        message,
    } = e
    else {
        return e.into();
    };
    match setting {
        Setting::BatchSize
            if a.test_mini_batch_size
                .is_some_and(|t| t > train_batch && t.to_string() == value) =>
        {
            format!("--test-mini-batch-size {value}: {message}").into()
        }
        Setting::TableRows if a.data_generation == DataGeneration::Dataset => {
            format!("--max-ind-range {}: {message}", a.max_ind_range).into()
        }
        Setting::TableRows => format!(
            "--arch-embedding-size {value}: {message}; cap the tables' rows with --max-ind-range"
        )
        .into(),
        _ => format!("{} {value}: {message}", setting.flag()).into(),
    }
}

fn describe(model: &Dlrm, data: &Data, workers: &Workers, background: bool, args: &Args) -> String {
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
        format!("inference only: {} test batches", data.test_batches)
    } else {
        format!(
            "{} training batches per epoch, {} test batches",
            data.train_batches, data.test_batches
        )
    };
    format!(
        "DLRM {}: bottom {}, top {}, {} tables, dim {}, {} interaction, batch {}, lr {}{memory}\n\
         {} threads ({}), ISA {}; {batches}, data loaded {}",
        c.precision.name(),
        list(&c.bottom_mlp),
        list(&c.top_mlp),
        c.table_rows.len(),
        c.embedding_dim,
        c.interaction.name(),
        c.batch_size,
        c.lr.base_lr,
        workers.pool.current_num_threads(),
        match &workers.pinned {
            Some(cpus) => {
                let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
                format!("pinned to CPUs {}", cpus.join(", "))
            }
            None => "not pinned".into(),
        },
        Isa::active().map_or("?".into(), |i| i.to_string()),
        if background {
            "on a background thread"
        } else {
            "in line"
        },
    )
}

/// The summary line: `stepped` is the wall time of the training steps, `waited` the time
/// spent waiting for (or, in line, producing) batches; `t` splits the steps by part.
fn describe_timings(
    t: &StepTimings,
    stepped: Duration,
    waited: Duration,
    wall: Duration,
    skipped: u64,
) -> String {
    let steps = t.steps.max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / steps;
    format!(
        "{} steps in {:.1} s: {:.2} ms/step without data loading ({:.2} ms with it)\n  \
         per step: data wait {:.2} ms, embedding {:.2} ms, MLP {:.2} ms, interaction {:.2} ms, other {:.2} ms{}",
        t.steps,
        wall.as_secs_f64(),
        ms(stepped),
        ms(stepped + waited),
        ms(waited),
        ms(t.embedding),
        ms(t.mlp),
        ms(t.interaction),
        ms(t.other),
        if skipped > 0 {
            format!("\n  {skipped} malformed input lines were skipped")
        } else {
            String::new()
        }
    )
}

/// Progress bar and report lines.
struct Reporter {
    bar: Option<ProgressBar>,
    enabled: bool,
}

impl Reporter {
    fn new(enabled: bool) -> Self {
        Reporter { bar: None, enabled }
    }

    fn start(&mut self, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} it [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        self.bar = Some(bar);
    }

    fn progress(&mut self, pos: u64, msg: String) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
            bar.set_message(msg);
        }
    }

    fn line(&mut self, msg: String) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(msg),
            _ => println!("{msg}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// The metrics CSV (optional).
struct Csv(Option<(File, PathBuf)>);

impl Csv {
    fn create(path: Option<&Path>) -> Result<Csv> {
        let Some(path) = path else {
            return Ok(Csv(None));
        };
        let mut f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(
            f,
            "step,epoch,train_loss,learning_rate,ms_per_step,test_loss,test_accuracy,test_auc"
        )?;
        Ok(Csv(Some((f, path.to_path_buf()))))
    }

    fn row(
        &mut self,
        step: u64,
        epoch: usize,
        loss: Option<f64>,
        lr: f32,
        ms: Option<f64>,
        eval: Option<&Eval>,
    ) -> Result<()> {
        let Some((f, path)) = &mut self.0 else {
            return Ok(());
        };
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        writeln!(
            f,
            "{step},{epoch},{},{lr},{},{},{},{}",
            opt(loss),
            opt(ms),
            opt(eval.map(|e| e.loss)),
            opt(eval.map(|e| e.accuracy)),
            opt(eval.map(|e| e.auc))
        )
        .map_err(|e| format!("{}: {e}", path.display()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["dlrm", "--progress", "false"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).expect("flags parse")
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dlrm-example-{}-{name}", std::process::id()))
    }

    /// A run without progress output, not stopped by any signal.
    fn quiet(a: &Args) -> Result<Summary> {
        run(a, &mut Reporter::new(false), &Stop::default())
    }

    #[test]
    fn flags_parse_as_documented() {
        let a = args(&[
            "--arch-sparse-feature-size",
            "16",
            "--arch-embedding-size",
            "10-20-30",
            "--arch-mlp-bot",
            "13-64-16",
            "--arch-mlp-top",
            "32-1",
            "--arch-interaction-op",
            "cat",
            "--arch-interaction-itself",
            "true",
            "--data-generation",
            "random",
            "--data-set",
            "terabyte",
            "--max-ind-range",
            "1000",
            "--num-indices-per-lookup",
            "5",
            "--num-indices-per-lookup-fixed",
            "true",
            "--mini-batch-size",
            "32",
            "--num-batches",
            "7",
            "--nepochs",
            "2",
            "--learning-rate",
            "0.5",
            "--lr-num-warmup-steps",
            "3",
            "--lr-decay-start-step",
            "4",
            "--lr-num-decay-steps",
            "5",
            "--loss-function",
            "mse",
            "--optimizer",
            "rwsadagrad",
            "--test-freq",
            "3",
            "--test-mini-batch-size",
            "64",
            "--print-freq",
            "2",
            "--numpy-rand-seed",
            "9",
            "--precision",
            "bf16",
            "--threads",
            "1",
            "--preset",
            "kaggle",
        ]);
        assert_eq!(a.arch_sparse_feature_size, Some(16));
        assert_eq!(a.arch_interaction_op, InteractionArg::Cat);
        assert!(a.arch_interaction_itself && a.num_indices_per_lookup_fixed);
        assert_eq!(
            (a.data_generation, a.data_set),
            (DataGeneration::Random, DataSet::Terabyte)
        );
        assert_eq!(
            (a.loss_function, a.optimizer, a.precision),
            (LossArg::Mse, OptimizerArg::Rwsadagrad, PrecisionArg::Bf16)
        );
        assert_eq!(
            (a.preset, a.threads, a.nepochs),
            (Some(Preset::Kaggle), Some(1), 2)
        );
        let s = Shape::from_args(&a).unwrap();
        assert_eq!(
            (s.bottom, s.top, s.rows, s.dim, s.batch),
            (vec![13, 64, 16], vec![32, 1], vec![10, 20, 30], 16, 32)
        );
        // Booleans are real booleans: "false" is false.
        assert!(!args(&["--arch-interaction-itself", "false"]).arch_interaction_itself);
        assert!(Args::try_parse_from(["dlrm", "--arch-interaction-itself", "False"]).is_err());
        assert!(Args::try_parse_from(["dlrm", "--precision", "fp16"]).is_err());
        // Data loading: in line (0) or on a background thread (1), else chosen by the cores.
        assert!(!background_loading(&args(&["--num-workers", "0"]), 1));
        assert!(background_loading(&args(&["--num-workers", "1"]), 1));
        assert!(Args::try_parse_from(["dlrm", "--num-workers", "2"]).is_err());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(background_loading(&args(&[]), 1), cores > 1);
        assert!(!background_loading(&args(&[]), cores));
        // Pinning is asked for, never assumed.
        assert!(!args(&[]).pin_threads);
        assert!(args(&["--pin-threads", "true"]).pin_threads);
        // A preset's sizes, capped by --max-ind-range.
        let s = Shape::from_args(&args(&["--preset", "small", "--max-ind-range", "500"])).unwrap();
        assert_eq!((s.rows, s.dim, s.lookups), (vec![500; 8], 64, 100));
        assert!(Shape::from_args(&args(&["--arch-mlp-bot", "13-x"])).is_err());
    }

    #[test]
    fn trains_synthetic_data_and_auc_rises() {
        let a = args(&[
            "--arch-embedding-size",
            "2000-2000-2000-2000",
            "--mini-batch-size",
            "128",
            "--num-batches",
            "400",
            "--test-freq",
            "200",
            "--test-num-batches",
            "20",
            "--threads",
            "2",
            "--num-workers",
            "1",
        ]);
        let csv = tmp("metrics.csv");
        let a = Args {
            metrics_csv: Some(csv.clone()),
            ..a
        };
        let s = quiet(&a).unwrap();
        assert_eq!(s.steps, 400);
        let last = s.evals.last().unwrap();
        assert!(last.auc > 0.7, "AUC {}", last.auc);
        let text = std::fs::read_to_string(&csv).unwrap();
        assert!(text.starts_with("step,epoch,train_loss"));
        assert!(text.lines().count() > 10);
        std::fs::remove_file(csv).ok();
    }

    #[test]
    fn random_data_bf16_with_adagrad_runs_and_checkpoints_resume() {
        let ckpt = tmp("model.safetensors");
        let base = [
            "--num-workers",
            "0",
            "--data-generation",
            "random",
            "--arch-embedding-size",
            "300-200",
            "--arch-mlp-bot",
            "4-8-4",
            "--arch-mlp-top",
            "8-1",
            "--arch-sparse-feature-size",
            "4",
            "--mini-batch-size",
            "16",
            "--num-batches",
            "20",
            "--precision",
            "bf16",
            "--optimizer",
            "rwsadagrad",
        ];
        let mut first = base.to_vec();
        first.extend(["--save-model", ckpt.to_str().unwrap()]);
        let s = quiet(&args(&first)).unwrap();
        assert_eq!(s.steps, 20);
        let mut resumed = base.to_vec();
        resumed.extend([
            "--load-model",
            ckpt.to_str().unwrap(),
            "--inference-only",
            "true",
        ]);
        let r = quiet(&args(&resumed)).unwrap();
        assert_eq!(r.evals.len(), 1);
        assert_eq!(r.evals[0].loss, s.evals.last().unwrap().loss);
        std::fs::remove_file(ckpt).ok();
    }

    /// A small Criteo-format file whose label follows C1 and I1.
    fn write_criteo(path: &Path, lines: usize) {
        let mut rng = dlrm_kernels::rng::Rng::new(5);
        let mut text = String::new();
        for _ in 0..lines {
            let c1 = rng.below(50) as u32;
            let i1 = rng.below(10);
            let p = if c1.is_multiple_of(2) { 0.8 } else { 0.2 } * if i1 > 5 { 1.0 } else { 0.8 };
            let label = (rng.uniform_f64() < p) as u8;
            text.push_str(&format!("{label}\t{i1}"));
            for _ in 1..13 {
                text.push_str(&format!("\t{}", rng.below(3)));
            }
            text.push_str(&format!("\t{c1:x}"));
            for _ in 1..26 {
                text.push_str(&format!("\t{:x}", rng.below(20)));
            }
            text.push('\n');
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn trains_on_a_kaggle_format_file_via_the_binary_format() {
        let raw = tmp("train.txt");
        write_criteo(&raw, 7000);
        let a = args(&[
            "--data-generation",
            "dataset",
            "--raw-data-file",
            raw.to_str().unwrap(),
            "--max-ind-range",
            "100",
            "--arch-sparse-feature-size",
            "8",
            "--arch-mlp-bot",
            "13-16-8",
            "--arch-mlp-top",
            "16-1",
            "--mini-batch-size",
            "32",
            "--nepochs",
            "3",
            "--learning-rate",
            "0.2",
        ]);
        let s = quiet(&a).unwrap();
        // 6/7 of 7000 lines at 32 per batch, three epochs.
        assert_eq!(s.steps, 3 * 6000usize.div_ceil(32) as u64);
        let (first, last) = (s.evals[0], *s.evals.last().unwrap());
        assert_eq!(first.samples, 500);
        assert!(last.auc > 0.65, "AUC {}", last.auc);
        // The converted binary files were made and are reused.
        let bin = PathBuf::from(format!("{}_processed_train.bin", raw.display()));
        assert!(bin.exists());
        for split in ["train", "test"] {
            std::fs::remove_file(format!("{}_processed_{split}.bin", raw.display())).ok();
        }
        std::fs::remove_file(raw).ok();
    }

    #[test]
    fn trains_on_terabyte_day_files_with_shuffled_batches() {
        let prefix = tmp("day");
        for d in 0..3 {
            write_criteo(&PathBuf::from(format!("{}_{d}", prefix.display())), 2000);
        }
        let a = args(&[
            "--data-generation",
            "dataset",
            "--data-set",
            "terabyte",
            "--raw-data-file",
            prefix.to_str().unwrap(),
            "--max-ind-range",
            "100",
            "--arch-sparse-feature-size",
            "8",
            "--arch-mlp-bot",
            "13-16-8",
            "--arch-mlp-top",
            "16-1",
            "--mini-batch-size",
            "32",
            "--nepochs",
            "2",
            "--learning-rate",
            "0.2",
            "--data-randomize",
            "total",
        ]);
        let s = quiet(&a).unwrap();
        // Days 0 and 1 train (4000 samples), the first half of day 2 tests.
        assert_eq!(s.steps, 2 * 4000usize.div_ceil(32) as u64);
        assert_eq!(s.evals[0].samples, 1000);
        assert!(s.evals.last().unwrap().auc > 0.65, "{:?}", s.evals.last());
        for split in ["train", "test"] {
            std::fs::remove_file(format!("{}_processed_{split}.bin", prefix.display())).ok();
        }
        for d in 0..3 {
            std::fs::remove_file(format!("{}_{d}", prefix.display())).ok();
        }
    }

    #[test]
    fn malformed_data_stops_before_training() {
        let raw = tmp("bad.txt");
        write_criteo(&raw, 100);
        let mut lines: Vec<String> = std::fs::read_to_string(&raw)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines[49] = "1\tnot-a-number".into(); // line 50, in the training split
        std::fs::write(&raw, lines.join("\n") + "\n").unwrap();
        let a = args(&[
            "--data-generation",
            "dataset",
            "--raw-data-file",
            raw.to_str().unwrap(),
            "--max-ind-range",
            "100",
            "--data-set",
            "kaggle",
        ]);
        let err = quiet(&a).unwrap_err().to_string();
        assert!(
            err.contains("bad.txt:50: dense feature I1 \"not-a-number\" is not an integer"),
            "{err}"
        );
        let bin = PathBuf::from(format!("{}_processed_train.bin", raw.display()));
        assert!(!bin.exists(), "no partial output is left to train on");
        let mut skipping = a.clone();
        skipping.skip_malformed = true;
        skipping.arch_sparse_feature_size = Some(8);
        skipping.arch_mlp_bot = Some("13-8".into());
        skipping.arch_mlp_top = Some("8-1".into());
        assert!(quiet(&skipping).is_ok());
        for split in ["train", "test"] {
            std::fs::remove_file(format!("{}_processed_{split}.bin", raw.display())).ok();
        }
        std::fs::remove_file(raw).ok();
    }

    #[test]
    fn a_diverging_run_stops_with_the_iteration_number() {
        let a = args(&[
            "--data-generation",
            "random",
            "--arch-embedding-size",
            "50-50",
            "--arch-mlp-bot",
            "4-8-4",
            "--arch-mlp-top",
            "8-1",
            "--arch-sparse-feature-size",
            "4",
            "--num-batches",
            "50",
            "--learning-rate",
            "1e30",
            "--round-targets",
            "false",
        ]);
        let err = quiet(&a).unwrap_err().to_string();
        assert!(err.starts_with("training stopped at iteration "), "{err}");
        assert!(err.contains("is not finite"), "{err}");
    }

    /// A small random-data run's flags, with `overrides` in place of its values.
    fn small(overrides: &[(&str, &str)]) -> Args {
        let mut flags = vec![
            ("--data-generation", "random"),
            ("--arch-embedding-size", "50-50"),
            ("--arch-mlp-bot", "13-8-4"),
            ("--arch-mlp-top", "8-1"),
            ("--arch-sparse-feature-size", "4"),
            ("--mini-batch-size", "16"),
            ("--num-batches", "5"),
            ("--num-workers", "0"),
        ];
        for &(flag, value) in overrides {
            match flags.iter_mut().find(|(f, _)| *f == flag) {
                Some(slot) => slot.1 = value,
                None => flags.push((flag, value)),
            }
        }
        let flat: Vec<&str> = flags.iter().flat_map(|&(f, v)| [f, v]).collect();
        args(&flat)
    }

    fn small_err(overrides: &[(&str, &str)]) -> String {
        match quiet(&small(overrides)) {
            Ok(s) => panic!("{overrides:?} ran {} steps", s.steps),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn flag_errors_name_the_flag_and_its_value() {
        let cases: [(&[(&str, &str)], &str); 10] = [
            (
                &[("--mini-batch-size", "0")],
                "--mini-batch-size must be at least 1, got 0",
            ),
            (
                &[("--test-mini-batch-size", "0")],
                "--test-mini-batch-size must be at least 1, got 0",
            ),
            (&[("--threads", "0")], "--threads must be at least 1, got 0"),
            (
                &[("--learning-rate", "nan")],
                "--learning-rate must be a finite number, got NaN",
            ),
            (
                &[("--learning-rate", "inf")],
                "--learning-rate must be a finite number, got inf",
            ),
            (
                &[("--num-indices-per-lookup", "0")],
                "--num-indices-per-lookup must be at least 1, got 0",
            ),
            (
                &[("--arch-sparse-feature-size", "0")],
                "--arch-sparse-feature-size must be at least 1, got 0",
            ),
            (
                &[("--arch-mlp-bot", "13-0-4")],
                "--arch-mlp-bot \"13-0-4\": every size must be at least 1",
            ),
            (
                &[("--arch-embedding-size", "50-0")],
                "--arch-embedding-size \"50-0\": every size must be at least 1",
            ),
            (
                &[
                    ("--data-generation", "synthetic"),
                    ("--mini-batch-size", "0"),
                ],
                "--mini-batch-size must be at least 1, got 0",
            ),
        ];
        for (overrides, want) in cases {
            assert_eq!(small_err(overrides), want);
        }
    }

    #[test]
    fn a_model_too_large_for_memory_is_refused_naming_the_flag() {
        let err = small_err(&[("--mini-batch-size", "1000000000000")]);
        assert!(
            err.starts_with("--mini-batch-size 1000000000000: the model needs "),
            "{err}"
        );
        assert!(err.contains("samples a batch fit"), "{err}");
        let err = small_err(&[("--test-mini-batch-size", "1000000000000")]);
        assert!(
            err.starts_with("--test-mini-batch-size 1000000000000: "),
            "{err}"
        );
        let err = small_err(&[("--arch-mlp-top", "100000000000-1")]);
        assert!(err.starts_with("--arch-mlp-top 100000000000-1: "), "{err}");
        let huge = vec!["4294967295"; 64].join("-");
        let err = small_err(&[("--arch-embedding-size", &huge)]);
        assert!(
            err.starts_with(&format!("--arch-embedding-size {huge}: ")),
            "{err}"
        );
        assert!(err.contains("--max-ind-range"), "{err}");
        let err = small_err(&[("--mini-batch-size", &usize::MAX.to_string())]);
        assert!(
            err.starts_with("--mini-batch-size 18446744073709551615: "),
            "{err}"
        );
    }

    #[test]
    fn flags_that_would_be_ignored_are_errors() {
        assert_eq!(
            small_err(&[("--raw-data-file", "train.txt")]),
            "--raw-data-file is only read with --data-generation dataset (this run would \
             train on random data)"
        );
        assert_eq!(
            small_err(&[
                ("--data-generation", "synthetic"),
                ("--processed-data-file", "day")
            ]),
            "--processed-data-file is only read with --data-generation dataset (this run \
             would train on synthetic data)"
        );
        assert_eq!(
            small_err(&[("--inference-only", "true")]),
            "--inference-only true needs --load-model: without it there is no trained model \
             to evaluate"
        );
    }

    #[test]
    fn output_paths_are_checked_before_anything_runs() {
        let dir = tmp("outputs");
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("train.txt");
        write_criteo(&raw, 300);
        let csv = dir.join("metrics.csv");
        let missing = PathBuf::from("/nonexistent/dir/m.safetensors");
        let cases: [(&str, &Path, &str); 5] = [
            (
                "--save-model",
                &missing,
                "directory /nonexistent/dir does not exist",
            ),
            ("--save-model", &dir, "is a directory"),
            (
                "--metrics-csv",
                Path::new("/nonexistent/dir/m.csv"),
                "directory /nonexistent/dir does not exist",
            ),
            ("--metrics-csv", &dir, "is a directory"),
            ("--load-model", &missing, "No such file or directory"),
        ];
        for (flag, path, why) in cases {
            let path = path.to_str().unwrap();
            let mut flags = vec![
                ("--data-generation", "dataset"),
                ("--raw-data-file", raw.to_str().unwrap()),
                ("--max-ind-range", "100"),
                ("--arch-mlp-bot", "13-8-4"),
                (flag, path),
            ];
            if flag != "--metrics-csv" {
                flags.push(("--metrics-csv", csv.to_str().unwrap()));
            }
            let err = small_err(&flags);
            assert!(err.starts_with(&format!("{flag} {path}: ")), "{err}");
            assert!(err.contains(why), "{err}");
            // Nothing ran: the data was not converted, the CSV not created.
            let names: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["train.txt"], "{flag}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A signal before training: nothing is trained or saved, and the run reports that it
    /// was interrupted. (Signals during training: the child-process tests below.)
    #[test]
    fn a_stop_before_training_trains_and_saves_nothing() {
        let dir = tmp("stop");
        std::fs::create_dir_all(&dir).unwrap();
        let ckpt = dir.join("m.safetensors");
        let a = small(&[
            ("--num-batches", "10"),
            ("--test-freq", "4"),
            ("--save-model", ckpt.to_str().unwrap()),
        ]);
        // Stopped before training: nothing trained, nothing saved.
        let stop = Stop::default();
        stop.request();
        let s = run(&a, &mut Reporter::new(false), &stop).unwrap();
        assert!(s.interrupted && s.steps == 0 && s.evals.is_empty(), "{s:?}");
        assert!(!ckpt.exists());
        let full = quiet(&a).unwrap();
        assert_eq!((full.steps, full.interrupted), (10, false));
        assert_eq!(checkpoint::load(&ckpt).unwrap().steps(), 10);
        std::fs::remove_dir_all(dir).unwrap();
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
        std::process::exit(i32::from(trainer_main(argv)));
    }

    /// The trainer started as a child process with `flags`, its stdout piped.
    fn spawn_trainer(flags: &[&str]) -> std::process::Child {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "tests::trainer_child_process",
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
            .and_then(|rest| rest.split(';').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(
            stdout.contains(&format!("checkpoint saved to {}", ckpt.display())),
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
}
