//! Loading overlapped with training: a background thread produces the next batches while
//! the current one trains, so the step does not wait for data (beyond the first batch).
//!
//! ```
//! use dlrm_kernels::data::prefetch::Prefetcher;
//! use dlrm_kernels::model::MiniBatch;
//! let batches = (0..5).map(|i| Ok(MiniBatch { targets: vec![i as f32], ..MiniBatch::default() }));
//! let pre = Prefetcher::spawn(batches, 2);
//! let got: Vec<f32> = pre.map(|b| b.unwrap().targets[0]).collect();
//! assert_eq!(got, [0.0, 1.0, 2.0, 3.0, 4.0]);
//! ```

use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::model::MiniBatch;

/// Batches produced on a background thread, `depth` ahead, in order; iterate it.
pub struct Prefetcher {
    rx: Option<Receiver<Result<MiniBatch>>>,
    handle: Option<JoinHandle<()>>,
    waited: Duration,
}

impl Prefetcher {
    /// Start producing from `source` on a new thread, at most `depth` batches ahead.
    /// An error from the source is delivered in order and ends the stream.
    pub fn spawn<I>(source: I, depth: usize) -> Self
    where
        I: Iterator<Item = Result<MiniBatch>> + Send + 'static,
    {
        let (tx, rx) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("dlrm-data".into())
            .spawn(move || {
                for item in source {
                    let stop = item.is_err();
                    if tx.send(item).is_err() || stop {
                        break; // receiver gone, or error delivered
                    }
                }
            })
            .expect("spawn the data thread");
        Prefetcher {
            rx: Some(rx),
            handle: Some(handle),
            waited: Duration::ZERO,
        }
    }

    /// Time the consumer has spent waiting for batches (data loading not hidden).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Iterator for Prefetcher {
    type Item = Result<MiniBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let t = Instant::now();
        let item = self.rx.as_ref()?.recv().ok();
        self.waited += t.elapsed();
        item
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Hang up first so a producer blocked on a full channel returns, then join it.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            h.join().ok();
        }
    }
}
