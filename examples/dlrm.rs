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

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser, ValueEnum};
use dlrm_kernels::checkpoint;
use dlrm_kernels::data::binary::{self, BinaryReader};
use dlrm_kernels::data::criteo::{self, OnMalformed, Split};
use dlrm_kernels::data::prefetch::Prefetcher;
use dlrm_kernels::data::random::{RandomData, RandomDataConfig};
use dlrm_kernels::data::synthetic::{SyntheticConfig, SyntheticData};
use dlrm_kernels::interaction::InteractionOp;
use dlrm_kernels::kernels::Isa;
use dlrm_kernels::loss::Loss;
use dlrm_kernels::metrics::{accuracy, roc_auc};
use dlrm_kernels::model::{
    Dlrm, DlrmConfig, EmbeddingOptimizer, MiniBatch, Precision, StepTimings,
};
use dlrm_kernels::optim::LrPolicy;
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
    /// Save a checkpoint (safetensors) here at every evaluation and at the end.
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
    let args = Args::parse();
    let mut out = Reporter::new(args.progress);
    match run(&args, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            out.finish();
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a run achieved (returned for tests; printed as the summary).
#[derive(Debug, Clone, Default)]
struct Summary {
    steps: u64,
    evals: Vec<Eval>,
    step_ms: f64,
    step_ms_with_data: f64,
}

/// The whole story: data, model, training loop, report.
fn run(args: &Args, out: &mut Reporter) -> Result<Summary> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Decided here, on the main thread: a pinned worker sees only its own CPU.
    let background = background_loading(args, threads);
    let workers = threads::pool(threads, args.pin_threads)?;
    workers.pool.install(|| {
        let data = Data::open(args, out)?;
        let cfg = model_config(args, &data)?;
        check_memory(&cfg)?;
        let mut model = match &args.load_model {
            Some(path) => {
                let mut m = Dlrm::new(cfg, args.numpy_rand_seed)?;
                checkpoint::load_into(&mut m, path)?;
                out.line(format!("loaded {} (step {})", path.display(), m.steps()));
                m
            }
            None => Dlrm::new(cfg, args.numpy_rand_seed)?,
        };
        out.line(describe(&model, &data, &workers, background));
        let mut csv = Csv::create(args.metrics_csv.as_deref())?;
        let mut summary = Summary::default();
        if args.inference_only {
            evaluate_and_report(&mut model, &data, 0, out, &mut csv, &mut summary)?;
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
        )?;
        Ok(summary)
    })
}

/// The training loop over epochs and batches (loaded in the background or in line), with
/// evaluation, checkpoints and the summary.
#[allow(clippy::too_many_arguments)]
fn train(
    args: &Args,
    model: &mut Dlrm,
    data: &Data,
    background: bool,
    out: &mut Reporter,
    csv: &mut Csv,
    summary: &mut Summary,
) -> Result<()> {
    let per_epoch = data.train_batches;
    let total = per_epoch * args.nepochs;
    let test_freq = if args.test_freq == 0 {
        total.div_ceil(10).max(1)
    } else {
        args.test_freq
    };
    evaluate_and_report(model, data, 0, out, csv, summary)?;
    out.start(total as u64);
    model.reset_timings();
    let (mut waited, mut run_time, mut stepped) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut running_loss, mut running_n) = (0.0, 0usize);
    let start_step = model.steps();
    for epoch in 0..args.nepochs {
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
                evaluate_and_report(model, data, epoch, out, csv, summary)?;
                if let Some(path) = &args.save_model {
                    checkpoint::save(model, path)?;
                }
            }
        }
        waited += batches.waited();
        run_time += epoch_start.elapsed();
    }
    out.finish();
    summary.steps = model.steps() - start_step;
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

/// Evaluate, report the line, log it to the CSV and keep it in the summary.
fn evaluate_and_report(
    model: &mut Dlrm,
    data: &Data,
    epoch: usize,
    out: &mut Reporter,
    csv: &mut Csv,
    summary: &mut Summary,
) -> Result<()> {
    let eval = evaluate(model, data)?;
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

fn evaluate(model: &mut Dlrm, data: &Data) -> Result<Eval> {
    let loss_fn = model.config().loss;
    let (mut probs, mut targets, mut loss_sum) = (Vec::new(), Vec::new(), 0.0);
    let mut p = Vec::new();
    for batch in data.test_batches() {
        let batch = batch?;
        model.predict(&batch, &mut p)?;
        loss_sum += loss_fn.mean(model.logits(), &batch.targets)? * batch.len() as f64;
        probs.extend_from_slice(&p);
        targets.extend_from_slice(&batch.targets);
    }
    let n = probs.len().max(1);
    Ok(Eval {
        loss: loss_sum / n as f64,
        accuracy: accuracy(&probs, &targets),
        auc: roc_auc(&probs, &targets).unwrap_or(f64::NAN),
        samples: probs.len(),
    })
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
    s.split('-')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("--{flag} {s:?}: expected sizes like 13-512-256").into())
        })
        .collect()
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

/// The model configuration: the shape from the flags, the tables from the data.
fn model_config(a: &Args, data: &Data) -> Result<DlrmConfig> {
    let s = Shape::from_args(a)?;
    if s.bottom[0] != data.dense_features {
        return Err(format!(
            "--arch-mlp-bot starts with {} inputs but the data has {} dense features",
            s.bottom[0], data.dense_features
        )
        .into());
    }
    Ok(DlrmConfig {
        bottom_mlp: s.bottom,
        top_mlp: s.top,
        table_rows: data.table_rows.clone(),
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
        embedding_optimizer: match a.optimizer {
            OptimizerArg::Sgd => EmbeddingOptimizer::Sgd,
            OptimizerArg::Rwsadagrad => EmbeddingOptimizer::RowwiseAdagrad,
        },
        lr: LrPolicy {
            base_lr: s.lr,
            warmup_steps: a.lr_num_warmup_steps,
            decay_start_step: a.lr_decay_start_step,
            decay_steps: a.lr_num_decay_steps,
        },
    })
}

/// Bytes the tables take (4 per weight, fp32 or bf16 Split-SGD).
fn table_bytes(cfg: &DlrmConfig) -> u64 {
    cfg.table_rows
        .iter()
        .map(|&r| 4 * (r * cfg.embedding_dim) as u64)
        .sum()
}

/// Refuse a model whose tables do not fit in the memory available, before allocating them.
fn check_memory(cfg: &DlrmConfig) -> Result<()> {
    let need = table_bytes(cfg);
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match available {
        Some(avail) if need > avail / 10 * 9 => Err(format!(
            "the embedding tables need {:.1} GiB but only {:.1} GiB of memory is available; \
             use --max-ind-range to cap the table sizes",
            need as f64 / (1u64 << 30) as f64,
            avail as f64 / (1u64 << 30) as f64
        )
        .into()),
        _ => Ok(()),
    }
}

fn describe(model: &Dlrm, data: &Data, workers: &Workers, background: bool) -> String {
    let c = model.config();
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
    format!(
        "DLRM {}: bottom {}, top {}, {} tables ({:.2} GiB), dim {}, {} interaction, batch {}, lr {}\n\
         {} threads ({}), ISA {}; {} training batches per epoch, {} test batches, data loaded {}",
        c.precision.name(),
        list(&c.bottom_mlp),
        list(&c.top_mlp),
        c.table_rows.len(),
        table_bytes(c) as f64 / (1u64 << 30) as f64,
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
        data.train_batches,
        data.test_batches,
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
        let s = run(&a, &mut Reporter::new(false)).unwrap();
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
        let s = run(&args(&first), &mut Reporter::new(false)).unwrap();
        assert_eq!(s.steps, 20);
        let mut resumed = base.to_vec();
        resumed.extend([
            "--load-model",
            ckpt.to_str().unwrap(),
            "--inference-only",
            "true",
        ]);
        let r = run(&args(&resumed), &mut Reporter::new(false)).unwrap();
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
        let s = run(&a, &mut Reporter::new(false)).unwrap();
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
        let s = run(&a, &mut Reporter::new(false)).unwrap();
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
        let err = run(&a, &mut Reporter::new(false)).unwrap_err().to_string();
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
        assert!(run(&skipping, &mut Reporter::new(false)).is_ok());
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
        let err = run(&a, &mut Reporter::new(false)).unwrap_err().to_string();
        assert!(err.starts_with("training stopped at iteration "), "{err}");
        assert!(err.contains("is not finite"), "{err}");
    }
}
