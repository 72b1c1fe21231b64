//! The `train` module: what observers are told and in which order, stopping (a request, a
//! target, a failed step), checkpoints and the CSV, and data that does not fit the model.

use std::sync::{Arc, Mutex};

use dlrm_kernels::Error;
use dlrm_kernels::checkpoint;
use dlrm_kernels::data::synthetic::{SyntheticConfig, SyntheticSource};
use dlrm_kernels::data::{BatchSource, MiniBatch, Split, SplitSizes};
use dlrm_kernels::model::{Dlrm, DlrmConfig};
use dlrm_kernels::train::{
    Checkpoints, CsvLog, Evaluation, LogLines, Metric, Observer, Output, Progress, RunInfo, Stop,
    StopReason, Summary, Target, TrainOptions, Trainer,
};

const ROWS: usize = 1000;

fn cfg() -> DlrmConfig {
    DlrmConfig {
        bottom_mlp: vec![13, 16, 8],
        top_mlp: vec![16, 1],
        table_rows: vec![ROWS; 4],
        embedding_dim: 8,
        batch_size: 64,
        ..DlrmConfig::tiny()
    }
}

fn data(train_batches: usize) -> SyntheticSource {
    let sizes = SplitSizes {
        train_batches,
        test_batches: 4,
        test_batch_size: 256,
    };
    let config = SyntheticConfig {
        table_rows: vec![ROWS; 4],
        batch_size: 64,
        ..SyntheticConfig::default()
    };
    SyntheticSource::new(config, sizes).unwrap()
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dlrm-train-{}-{name}", std::process::id()))
}

/// Records every call, and asks the run to stop after `stop_after` progress reports.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<String>>>,
    stop_after: Option<usize>,
    stop: Option<Stop>,
    reports: usize,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn push(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Observer for Recorder {
    fn start(&mut self, run: &RunInfo) -> dlrm_kernels::Result<()> {
        self.stop = Some(run.stop.clone());
        self.push(format!("start {} {}", run.start_step, run.total_steps));
        Ok(())
    }

    fn progress(&mut self, p: &Progress) -> dlrm_kernels::Result<()> {
        self.reports += 1;
        if Some(self.reports) == self.stop_after {
            self.stop.as_ref().unwrap().request();
        }
        assert!(p.loss.is_finite() && p.ms_per_step > 0.0);
        self.push(format!("progress {}", p.done));
        Ok(())
    }

    fn evaluated(&mut self, model: &Dlrm, e: &Evaluation) -> dlrm_kernels::Result<()> {
        assert_eq!(model.steps(), e.step);
        self.push(format!("eval {}", e.step));
        Ok(())
    }

    fn stopping(&mut self, model: &Dlrm, reason: StopReason) -> dlrm_kernels::Result<()> {
        let why = match reason {
            StopReason::Interrupted => "interrupted".to_string(),
            StopReason::TargetReached { metric, .. } => format!("{metric} reached"),
        };
        self.push(format!("stopping {} {why}", model.steps()));
        Ok(())
    }

    fn finished(&mut self, _: &Dlrm, s: &Summary) -> dlrm_kernels::Result<()> {
        self.push(format!("finished {}", s.steps));
        Ok(())
    }
}

fn options() -> TrainOptions {
    TrainOptions {
        eval_every: Some(10),
        report_every: 5,
        background_loading: false,
        ..TrainOptions::default()
    }
}

#[test]
fn observers_are_told_in_order_and_the_cadences_hold() {
    let rec = Recorder::default();
    let opts = TrainOptions {
        epochs: 2,
        ..options()
    };
    let mut trainer = Trainer::new(Dlrm::new(cfg(), 1).unwrap(), data(15), opts)
        .unwrap()
        .observe(rec.clone());
    let s = trainer.run().unwrap();
    assert_eq!((s.steps, s.stopped), (30, None));
    let want = [
        "start 0 30",
        "eval 0",
        "progress 5",
        "progress 10",
        "eval 10",
        "progress 15",
        "progress 20",
        "eval 20",
        "progress 25",
        "progress 30",
        "eval 30",
        "finished 30",
    ];
    assert_eq!(rec.calls(), want);
    assert_eq!(
        s.evals.iter().map(|e| e.step).collect::<Vec<_>>(),
        [0, 10, 20, 30]
    );
    assert_eq!(s.evals[2].epoch, 1);
    assert_eq!(s.timings.steps, 30);
    // Training on this data raises the test AUC.
    let best = s.best(Metric::Auc).unwrap();
    assert!(best.step > 0 && best.eval.auc > s.evals[0].eval.auc);
}

#[test]
fn a_stop_request_ends_the_run_after_the_current_step_and_saves_it() {
    let ckpt = tmp("stop.safetensors");
    let rec = Recorder {
        stop_after: Some(3),
        ..Recorder::default()
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let out = Output::new(move |l| sink.lock().unwrap().push(l.to_string()));
    let mut trainer = Trainer::new(Dlrm::new(cfg(), 1).unwrap(), data(100), options())
        .unwrap()
        .observe(rec.clone())
        .observe(LogLines::new(out.clone()))
        .observe(Checkpoints::new(&ckpt, out).unwrap());
    let s = trainer.run().unwrap();
    assert!(s.interrupted());
    assert_eq!(s.steps, 15);
    let calls = rec.calls();
    assert_eq!(
        &calls[calls.len() - 2..],
        ["stopping 15 interrupted", "finished 15"]
    );
    // Saved at the evaluation of step 10, then at the stop (step 15).
    assert_eq!(checkpoint::load(&ckpt).unwrap().steps(), 15);
    let lines = lines.lock().unwrap().join("\n");
    assert!(
        lines.contains("interrupted: stopped after step 15"),
        "{lines}"
    );
    assert!(lines.contains("checkpoint saved to "), "{lines}");
    assert!(lines.contains("(step 15)"), "{lines}");
    std::fs::remove_file(ckpt).ok();
}

#[test]
fn reaching_the_target_stops_training() {
    let csv = tmp("target.csv");
    let target = Target {
        metric: Metric::Auc,
        value: 0.6,
    };
    let opts = TrainOptions {
        target: Some(target),
        ..options()
    };
    let mut trainer = Trainer::new(Dlrm::new(cfg(), 1).unwrap(), data(1000), opts)
        .unwrap()
        .observe(CsvLog::new(&csv).unwrap());
    let s = trainer.run().unwrap();
    let last = s.evals.last().unwrap();
    assert!(s.steps < 1000 && s.steps == last.step, "{} steps", s.steps);
    assert!(target.reached(&last.eval));
    assert!(
        s.evals[..s.evals.len() - 1]
            .iter()
            .all(|e| !target.reached(&e.eval))
    );
    assert!(matches!(
        s.stopped,
        Some(StopReason::TargetReached {
            metric: Metric::Auc,
            ..
        })
    ));
    // The CSV has its header, a row per report and per evaluation.
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("step,epoch,train_loss"));
    assert_eq!(rows.len() - 1, s.evals.len() + s.steps as usize / 5);
    std::fs::remove_file(csv).ok();
}

/// Batch 5 of every epoch has an index past its table.
struct BadBatch(SyntheticSource);

impl BatchSource for BadBatch {
    fn dense_features(&self) -> usize {
        self.0.dense_features()
    }
    fn table_rows(&self) -> Vec<usize> {
        self.0.table_rows()
    }
    fn batches(&self, split: Split) -> usize {
        self.0.batches(split)
    }
    fn batch(&self, split: Split, epoch: usize, i: usize) -> dlrm_kernels::Result<MiniBatch> {
        let mut b = self.0.batch(split, epoch, i)?;
        if split == Split::Train && i == 5 {
            b.indices[2][7] = ROWS as i64;
        }
        Ok(b)
    }
}

#[test]
fn a_failed_step_names_its_iteration_and_leaves_the_model_as_it_was() {
    let mut trainer =
        Trainer::new(Dlrm::new(cfg(), 1).unwrap(), BadBatch(data(10)), options()).unwrap();
    let err = trainer.run().unwrap_err();
    assert_eq!(
        err.to_string(),
        "training stopped at iteration 6 (epoch 0): table 2, bag 7, position 7: index 1000 >= \
         rows 1000"
    );
    let Error::Training {
        iteration, cause, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert!(matches!(**cause, Error::IndexOutOfRange { table: 2, .. }));
    assert_eq!((*iteration, trainer.model().steps()), (6, 5));
}

#[test]
fn data_that_does_not_fit_the_model_is_refused() {
    let model = || Dlrm::new(cfg(), 1).unwrap();
    let more_rows = SyntheticSource::new(
        SyntheticConfig {
            table_rows: vec![ROWS, ROWS, ROWS + 1, ROWS],
            ..SyntheticConfig::default()
        },
        SplitSizes {
            train_batches: 1,
            test_batches: 1,
            test_batch_size: 8,
        },
    )
    .unwrap();
    let err = Trainer::new(model(), more_rows, options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: table 2: the data's indices go up to 1001 rows, the model's \
         table has 1000"
    );
    let no_reports = TrainOptions {
        report_every: 0,
        ..options()
    };
    assert!(Trainer::new(model(), data(1), no_reports).is_err());
}
