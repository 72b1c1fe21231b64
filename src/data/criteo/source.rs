//! Criteo data as a [`BatchSource`]: where the files are, how they are read, and the raw
//! text converted once to the MLPerf binary format.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Dataset, OnMalformed, split_parts};
use crate::data::binary::{self, BinaryData};
use crate::data::{BatchSource, MiniBatch, Part, Split};
use crate::error::{Error, Result};

/// Which Criteo dataset raw files hold (Terabyte's day count is found from the files).
///
/// ```
/// use dlrm_kernels::data::criteo::DatasetKind;
/// assert_eq!("terabyte".parse::<DatasetKind>()?, DatasetKind::Terabyte);
/// assert_eq!(DatasetKind::Kaggle.name(), "kaggle");
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DatasetKind {
    /// Kaggle: one `train.txt`.
    #[default]
    Kaggle,
    /// Terabyte: `day_0` .. `day_{N-1}`.
    Terabyte,
}

impl DatasetKind {
    /// Every kind, in the order of their names.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Kaggle, DatasetKind::Terabyte];

    /// `"kaggle"` or `"terabyte"`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Kaggle => "kaggle",
            DatasetKind::Terabyte => "terabyte",
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::error::parse_name(s, "Criteo dataset", &Self::ALL, Self::name)
    }
}

/// Number of `<prefix>_N` day files present, counted from `<prefix>_0` up.
///
/// # Errors
///
/// [`Error::Config`] when fewer than 2 are found (the split needs a day to test on).
///
/// ```
/// let err = dlrm_kernels::data::criteo::count_days(std::path::Path::new("/nonexistent/day"));
/// assert!(err.unwrap_err().to_string().contains("found 0 Terabyte day files /nonexistent/day_N"));
/// ```
pub fn count_days(prefix: &Path) -> Result<usize> {
    let day = |d: usize| {
        let mut p = prefix.as_os_str().to_os_string();
        p.push(format!("_{d}"));
        PathBuf::from(p)
    };
    let days = (0..).take_while(|&d| day(d).exists()).count();
    if days < 2 {
        return Err(Error::Config(format!(
            "found {days} Terabyte day files {}_N; at least 2 are needed",
            prefix.display()
        )));
    }
    Ok(days)
}

/// Where a Criteo dataset's files are: the raw text, and the prefix of its MLPerf binary
/// files (by default the raw path followed by `_processed`).
///
/// ```
/// use dlrm_kernels::data::criteo::{CriteoFiles, DatasetKind};
/// let files = CriteoFiles { kind: DatasetKind::Kaggle, raw: Some("c/train.txt".into()), processed: None };
/// assert_eq!(files.prefix()?, std::path::Path::new("c/train.txt_processed"));
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CriteoFiles {
    /// Kaggle or Terabyte.
    pub kind: DatasetKind,
    /// Kaggle's `train.txt`, or the path prefix of Terabyte's `day_N` files.
    pub raw: Option<PathBuf>,
    /// Prefix of the binary files (`<prefix>_train.bin`, `<prefix>_test.bin`).
    pub processed: Option<PathBuf>,
}

impl CriteoFiles {
    /// The prefix of the binary files.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when neither the raw nor the processed files are named.
    ///
    /// ```
    /// assert!(dlrm_kernels::data::criteo::CriteoFiles::default().prefix().is_err());
    /// ```
    pub fn prefix(&self) -> Result<PathBuf> {
        match (&self.processed, &self.raw) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(raw)) => {
                let mut p = raw.as_os_str().to_os_string();
                p.push("_processed");
                Ok(PathBuf::from(p))
            }
            (None, None) => Err(Error::Config(
                "a Criteo dataset needs its raw files or its processed (binary) files".into(),
            )),
        }
    }
}

/// How a Criteo dataset is read.
///
/// ```
/// use dlrm_kernels::data::criteo::{CriteoOptions, OnMalformed};
/// let o = CriteoOptions::default();
/// assert_eq!((o.batch_size, o.on_malformed), (128, OnMalformed::Fail));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriteoOptions {
    /// Samples per training batch.
    pub batch_size: usize,
    /// Samples per test batch.
    pub test_batch_size: usize,
    /// Rows per table: categorical values are taken modulo this.
    pub max_ind_range: u32,
    /// What a malformed raw line does.
    pub on_malformed: OnMalformed,
}

impl Default for CriteoOptions {
    fn default() -> Self {
        CriteoOptions {
            batch_size: 128,
            test_batch_size: 128,
            max_ind_range: 10_000_000,
            on_malformed: OnMalformed::Fail,
        }
    }
}

/// A Criteo dataset as a [`BatchSource`]: the raw text converted once (streaming, never a
/// whole file in memory) to the MLPerf binary format beside it, then read from the binary
/// files ([`BinaryData`]), so later runs start at once.
///
/// ```
/// use dlrm_kernels::data::criteo::{CriteoData, CriteoFiles, CriteoOptions};
/// use dlrm_kernels::data::{BatchSource, Split};
/// let raw = std::env::temp_dir().join(format!("criteo-doc-{}.txt", std::process::id()));
/// let line = format!("1{}{}\n", "\t3".repeat(13), "\tab".repeat(26));
/// std::fs::write(&raw, line.repeat(70))?; // 60 lines train, 5 test
/// let files = CriteoFiles { raw: Some(raw.clone()), ..CriteoFiles::default() };
/// let options = CriteoOptions { batch_size: 16, max_ind_range: 100, ..CriteoOptions::default() };
/// let data = CriteoData::open(&files, options, &mut |line| println!("{line}"))?;
/// assert_eq!(data.batches(Split::Train), 4);
/// assert_eq!(data.batch(Split::Train, 0, 0)?.indices[0][0], 0xab % 100);
/// # for split in [Split::Train, Split::Test] {
/// #     std::fs::remove_file(dlrm_kernels::data::binary::BinaryData::file(&files.prefix()?, split)).ok();
/// # }
/// # std::fs::remove_file(&raw).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct CriteoData {
    data: BinaryData,
    skipped: u64,
}

impl CriteoData {
    /// Make the binary files of `files` that are missing from its raw text, telling `log`
    /// what it converts and how fast; returns the prefix of the binary files and the
    /// number of malformed lines skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a binary file is missing and no raw file was named, or
    /// Terabyte's day files are fewer than 2; the raw reader's errors ([`Error::Data`]
    /// naming file and line for a malformed line unless `on_malformed` skips it) and I/O
    /// errors. A failed conversion leaves no partial file.
    ///
    /// ```
    /// use dlrm_kernels::data::criteo::{CriteoData, CriteoFiles, DatasetKind, OnMalformed};
    /// let files = CriteoFiles { processed: Some("/nonexistent/p".into()), ..CriteoFiles::default() };
    /// let err = CriteoData::prepare(&files, OnMalformed::Fail, &mut |_| {}).unwrap_err();
    /// assert!(err.to_string().contains("/nonexistent/p_train.bin is missing"));
    /// ```
    pub fn prepare(
        files: &CriteoFiles,
        on_malformed: OnMalformed,
        log: &mut dyn FnMut(String),
    ) -> Result<(PathBuf, u64)> {
        let prefix = files.prefix()?;
        let mut skipped = 0;
        for split in [Split::Train, Split::Test] {
            let file = BinaryData::file(&prefix, split);
            if file.exists() {
                continue;
            }
            let Some(raw) = &files.raw else {
                return Err(Error::Config(format!(
                    "{} is missing and no raw data file was given to make it",
                    file.display()
                )));
            };
            let dataset = match files.kind {
                DatasetKind::Kaggle => Dataset::Kaggle,
                DatasetKind::Terabyte => Dataset::Terabyte {
                    days: count_days(raw)?,
                },
            };
            log(format!(
                "converting {} ({}) to {}",
                raw.display(),
                split.name(),
                file.display()
            ));
            let t = Instant::now();
            let parts = split_parts(dataset, raw, split)?;
            let (n, bad) = binary::convert(parts, on_malformed, &file)?;
            skipped += bad;
            let secs = t.elapsed().as_secs_f64();
            log(format!(
                "  {n} samples in {secs:.1} s ({:.2} M lines/s){}",
                (n + bad) as f64 / secs / 1e6,
                if bad > 0 {
                    format!(", {bad} malformed lines skipped")
                } else {
                    String::new()
                }
            ));
        }
        Ok((prefix, skipped))
    }

    /// [`CriteoData::prepare`] the files, then open them ([`BinaryData::open`]) as
    /// `options` say.
    ///
    /// # Errors
    ///
    /// Those of [`CriteoData::prepare`] and [`BinaryData::open`].
    ///
    /// ```
    /// use dlrm_kernels::data::criteo::{CriteoData, CriteoFiles, CriteoOptions};
    /// let files = CriteoFiles { raw: Some("/nonexistent/train.txt".into()), ..CriteoFiles::default() };
    /// let options = CriteoOptions { max_ind_range: 1000, ..CriteoOptions::default() };
    /// let err = CriteoData::open(&files, options, &mut |_| {}).unwrap_err();
    /// assert!(err.to_string().starts_with("/nonexistent/train.txt: "));
    /// ```
    pub fn open(
        files: &CriteoFiles,
        options: CriteoOptions,
        log: &mut dyn FnMut(String),
    ) -> Result<Self> {
        let (prefix, skipped) = Self::prepare(files, options.on_malformed, log)?;
        let data = BinaryData::open(
            &prefix,
            options.batch_size,
            options.test_batch_size,
            options.max_ind_range,
        )?;
        Ok(CriteoData { data, skipped })
    }

    /// The binary data read (see the [type's example](CriteoData) for a whole run).
    pub fn binary(&self) -> &BinaryData {
        &self.data
    }

    /// Change the binary data (e.g. [`BinaryData::shuffled`]; the [type's
    /// example](CriteoData) opens one).
    pub fn map_binary(self, f: impl FnOnce(BinaryData) -> BinaryData) -> Self {
        CriteoData {
            data: f(self.data),
            skipped: self.skipped,
        }
    }
}

impl BatchSource for CriteoData {
    fn dense_features(&self) -> usize {
        self.data.dense_features()
    }

    fn table_rows(&self) -> Vec<usize> {
        self.data.table_rows()
    }

    fn batches(&self, split: Split) -> usize {
        self.data.batches(split)
    }

    fn batch(&self, split: Split, epoch: usize, i: usize) -> Result<MiniBatch> {
        self.data.batch(split, epoch, i)
    }

    fn part(&self, split: Split, epoch: usize, i: usize, part: Part) -> Result<MiniBatch> {
        self.data.part(split, epoch, i, part)
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}
