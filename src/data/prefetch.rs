//! Loading beside training: a background thread produces the next batches while the current
//! one trains, so the step does not wait for data (beyond the first batch). Or, where
//! training already keeps every core busy, loading in line on the caller's thread: a
//! background loader could then only take CPU from the step, so each batch is produced when
//! asked and its time counted as waiting for data (how the DLRM reference, whose data loader
//! has no workers by default, runs and measures).
//!
//! ```
//! use dlrm_kernels::data::prefetch::Prefetcher;
//! use dlrm_kernels::data::MiniBatch;
//! let batches = (0..5).map(|i| Ok(MiniBatch { targets: vec![i as f32], ..MiniBatch::default() }));
//! let pre = Prefetcher::spawn(batches, 2);
//! let got: Vec<f32> = pre.map(|b| b.unwrap().targets[0]).collect();
//! assert_eq!(got, [0.0, 1.0, 2.0, 3.0, 4.0]);
//! ```

use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::data::MiniBatch;
use crate::error::Result;

/// A source of batches, as the prefetcher takes it.
type Source = Box<dyn Iterator<Item = Result<MiniBatch>> + Send>;

/// Where the batches are produced.
enum Mode {
    /// On a background thread, sent through a bounded channel.
    Background {
        rx: Option<Receiver<Result<MiniBatch>>>,
        handle: Option<JoinHandle<()>>,
    },
    /// On the consumer's thread, when asked (`None` after an error: the stream ends).
    Inline(Option<Source>),
}

/// Batches produced ahead on a background thread ([`Prefetcher::spawn`]) or in line
/// ([`Prefetcher::inline`]), in order; iterate it. Either way an error from the source is
/// delivered in order and ends the stream.
pub struct Prefetcher {
    mode: Mode,
    waited: Duration,
}

impl Prefetcher {
    /// Start producing from `source` on a new thread, at most `depth` batches ahead.
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
            mode: Mode::Background {
                rx: Some(rx),
                handle: Some(handle),
            },
            waited: Duration::ZERO,
        }
    }

    /// Produce each batch from `source` on the caller's thread when it is asked for; the time
    /// it takes counts as [`Prefetcher::waited`]. For machines where training uses every core.
    ///
    /// ```
    /// use dlrm_kernels::data::prefetch::Prefetcher;
    /// use dlrm_kernels::data::MiniBatch;
    /// let batches = (0..3).map(|i| Ok(MiniBatch { targets: vec![i as f32], ..MiniBatch::default() }));
    /// let mut pre = Prefetcher::inline(batches);
    /// assert_eq!(pre.next().unwrap()?.targets, [0.0]);
    /// assert_eq!(pre.count(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn inline<I>(source: I) -> Self
    where
        I: Iterator<Item = Result<MiniBatch>> + Send + 'static,
    {
        Prefetcher {
            mode: Mode::Inline(Some(Box::new(source))),
            waited: Duration::ZERO,
        }
    }

    /// [`Prefetcher::spawn`] with `depth` when `background`, else [`Prefetcher::inline`].
    ///
    /// ```
    /// use dlrm_kernels::data::prefetch::Prefetcher;
    /// let none = std::iter::empty();
    /// assert_eq!(Prefetcher::new(none, false, 4).count(), 0);
    /// ```
    pub fn new<I>(source: I, background: bool, depth: usize) -> Self
    where
        I: Iterator<Item = Result<MiniBatch>> + Send + 'static,
    {
        if background {
            Self::spawn(source, depth)
        } else {
            Self::inline(source)
        }
    }

    /// Whether batches are produced on a background thread.
    ///
    /// ```
    /// use dlrm_kernels::data::prefetch::Prefetcher;
    /// assert!(!Prefetcher::inline(std::iter::empty()).is_background());
    /// ```
    pub fn is_background(&self) -> bool {
        matches!(self.mode, Mode::Background { .. })
    }

    /// Time the consumer has spent waiting for batches: data loading not hidden behind
    /// training (in line: all of it).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Iterator for Prefetcher {
    type Item = Result<MiniBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let t = Instant::now();
        let item = match &mut self.mode {
            Mode::Background { rx, .. } => rx.as_ref()?.recv().ok(),
            Mode::Inline(source) => {
                let item = source.as_mut()?.next();
                if !matches!(item, Some(Ok(_))) {
                    *source = None; // an error or the end: nothing more
                }
                item
            }
        };
        self.waited += t.elapsed();
        item
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        if let Mode::Background { rx, handle } = &mut self.mode {
            // Hang up first so a producer blocked on a full channel returns, then join it.
            drop(rx.take());
            if let Some(h) = handle.take() {
                h.join().ok();
            }
        }
    }
}
