//! Train DLRM on the CPU with `dlrm-kernels`.
//!
//! ```sh
//! cargo run --release --example dlrm                       # the default model, synthetic data
//! cargo run --release --example dlrm -- --preset small --data-generation random --num-batches 50
//! cargo run --release --example dlrm -- --preset kaggle --data-generation dataset \
//!     --raw-data-file ./criteo/train.txt --max-ind-range 1000000 --test-freq 2000
//! cargo run --release --example dlrm -- --help             # every flag
//! ```
//!
//! The story: the DLRM reference's flags are parsed ([`dlrm_kernels::cli::Args`]), checked
//! before anything runs (their values, the files to read and write, the memory the model
//! needs), the data is prepared and the model built, then [`dlrm_kernels::train::Trainer`]
//! trains it, evaluating as it goes, and says where the time went. Ctrl-C or SIGTERM stops
//! training after the current step, saves the checkpoint, prints the summary and exits with
//! status 130; a second signal stops at once (never in the middle of writing a checkpoint).
//! All of that is [`dlrm_kernels::cli::main`]; this program adds the progress bar.

use std::process::ExitCode;

use dlrm_kernels::Result;
use dlrm_kernels::cli::{self, Args, Ui};
use dlrm_kernels::model::Dlrm;
use dlrm_kernels::train::{Observer, Output, Progress, RunInfo, Summary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn main() -> ExitCode {
    ExitCode::from(cli::main(std::env::args_os(), console))
}

/// Lines on standard output, and a progress bar on the terminal while training runs (with
/// `--progress true`, the default; lines are then printed above the bar).
fn console(args: &Args) -> Ui {
    if !args.progress {
        return Ui {
            out: Output::stdout(),
            progress: None,
        };
    }
    let bar = ProgressBar::hidden(); // drawn once training starts
    let lines = bar.clone();
    let out = Output::new(move |line| {
        if lines.is_hidden() {
            println!("{line}");
        } else {
            lines.println(line);
        }
    });
    Ui {
        out,
        progress: Some(Box::new(Bar(bar))),
    }
}

/// The progress bar: steps done, time left, and the last progress report.
struct Bar(ProgressBar);

impl Observer for Bar {
    fn start(&mut self, run: &RunInfo) -> Result<()> {
        let style = ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} it [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("a valid template");
        self.0.set_style(style);
        self.0.set_length(run.total_steps);
        self.0.set_draw_target(ProgressDrawTarget::stderr());
        Ok(())
    }

    fn progress(&mut self, p: &Progress) -> Result<()> {
        self.0.set_position(p.done);
        self.0.set_message(p.describe());
        Ok(())
    }

    fn finished(&mut self, _: &Dlrm, _: &Summary) -> Result<()> {
        self.0.finish();
        Ok(())
    }
}

/// Where a failed run leaves the bar: as it was, with the error printed below it.
impl Drop for Bar {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.abandon();
        }
    }
}
