//! The MLPerf binary format: a flat file of little-endian `i32` records of 40 values,
//! `[label, I1..I13, C1..C26]` (160 bytes a sample), read memory-mapped in batch-sized chunks
//! with the transforms (`ln(x + 1)` on dense, `mod max_ind_range` on categorical) applied at
//! read time; and a converter from the raw text format.
//!
//! ```
//! use dlrm_kernels::data::binary::{BinaryReader, BinaryWriter};
//! use dlrm_kernels::data::criteo::Record;
//! let path = std::env::temp_dir().join(format!("bin-doc-{}.bin", std::process::id()));
//! let mut w = BinaryWriter::create(&path)?;
//! for i in 0..5 {
//!     let mut r = Record::default();
//!     r.label = i % 2;
//!     r.cat[0] = 100 + i as u32;
//!     w.write(&r)?;
//! }
//! w.finish()?;
//! let reader = BinaryReader::open(&path, 2, 1000)?;
//! assert_eq!((reader.records(), reader.batches()), (5, 3)); // partial last batch
//! let last = reader.batch(2)?;
//! assert_eq!((last.len(), last.indices[0][0]), (1, 104));
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::data::criteo::{DENSE, FIELDS, Record, SPARSE, dense_transform};
use crate::data::{BatchSource, MiniBatch, Split, check_batch_number};
use crate::error::{Error, Result};
use crate::kernels::mmap::MappedFile;
use crate::rng::Rng;

/// Bytes per record.
pub const RECORD_BYTES: usize = 4 * FIELDS;

/// Writes records in the binary format (buffered; call [`BinaryWriter::finish`]).
pub struct BinaryWriter {
    out: BufWriter<File>,
    path: PathBuf,
    records: u64,
}

impl BinaryWriter {
    /// Create (truncate) `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be created.
    ///
    /// ```
    /// assert!(dlrm_kernels::data::binary::BinaryWriter::create(std::path::Path::new("/no/dir/x.bin")).is_err());
    /// ```
    pub fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(BinaryWriter {
            out: BufWriter::with_capacity(1 << 20, f),
            path: path.to_path_buf(),
            records: 0,
        })
    }

    /// Append one record.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] on a write error.
    pub fn write(&mut self, r: &Record) -> Result<()> {
        let mut buf = [0u8; RECORD_BYTES];
        let values = std::iter::once(r.label)
            .chain(r.dense.iter().copied())
            .chain(r.cat.iter().map(|&c| c as i32));
        for (chunk, v) in buf.chunks_exact_mut(4).zip(values) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        self.records += 1;
        self.out
            .write_all(&buf)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Flush and close; returns the number of records written.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] on a write error.
    pub fn finish(mut self) -> Result<u64> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(self.records)
    }
}

/// Reads batches from a memory-mapped binary file.
#[derive(Debug)]
pub struct BinaryReader {
    map: MappedFile,
    path: PathBuf,
    batch: usize,
    max_ind_range: u32,
    records: usize,
}

impl BinaryReader {
    /// Map `path` for batches of `batch` samples.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be mapped; [`Error::Data`] if its length is not a
    /// whole number of 160-byte records (a truncated or foreign file), or if it is empty;
    /// [`Error::Config`] for a zero batch or `max_ind_range`.
    ///
    /// ```
    /// # let p = std::env::temp_dir().join(format!("bin-trunc-{}.bin", std::process::id()));
    /// std::fs::write(&p, vec![0u8; 161])?;
    /// let err = dlrm_kernels::data::binary::BinaryReader::open(&p, 2, 10).unwrap_err();
    /// assert!(err.to_string().contains("161 bytes is not a whole number of 160-byte records"));
    /// # std::fs::remove_file(&p).ok();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: &Path, batch: usize, max_ind_range: u32) -> Result<Self> {
        if batch == 0 || max_ind_range == 0 {
            return Err(Error::Config(format!(
                "binary reader needs a positive batch size and max-ind-range (got {batch}, {max_ind_range})"
            )));
        }
        let map = MappedFile::open(path).map_err(|e| Error::io(path, e))?;
        let data_err = |message: String| Error::Data {
            path: path.display().to_string(),
            line: 0,
            message,
        };
        if map.len() % RECORD_BYTES != 0 {
            return Err(data_err(format!(
                "{} bytes is not a whole number of {RECORD_BYTES}-byte records \
                 (truncated, or not in the MLPerf binary format)",
                map.len()
            )));
        }
        if map.is_empty() {
            return Err(data_err("no records".into()));
        }
        let records = map.len() / RECORD_BYTES;
        Ok(BinaryReader {
            map,
            path: path.to_path_buf(),
            batch,
            max_ind_range,
            records,
        })
    }

    /// Records in the file.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Batches per pass (the last may be partial).
    pub fn batches(&self) -> usize {
        self.records.div_ceil(self.batch)
    }

    /// Batch `i` (`0..batches()`), transforms applied.
    ///
    /// # Errors
    ///
    /// [`Error::Data`] naming the record (1-based) whose label is not 0 or 1;
    /// [`Error::Config`] for `i` out of range.
    pub fn batch(&self, i: usize) -> Result<MiniBatch> {
        if i >= self.batches() {
            return Err(Error::Config(format!(
                "batch {i} of {} requested",
                self.batches()
            )));
        }
        let first = i * self.batch;
        let n = (self.records - first).min(self.batch);
        let bytes = &self.map.as_bytes()[first * RECORD_BYTES..(first + n) * RECORD_BYTES];
        let mut out = MiniBatch {
            dense: Vec::with_capacity(n * DENSE),
            indices: (0..SPARSE).map(|_| Vec::with_capacity(n)).collect(),
            offsets: (0..SPARSE).map(|_| (0..n as i64).collect()).collect(),
            targets: Vec::with_capacity(n),
        };
        for (r, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let v =
                |k: usize| i32::from_le_bytes(rec[4 * k..4 * k + 4].try_into().expect("4 bytes"));
            let label = v(0);
            if label != 0 && label != 1 {
                return Err(Error::Data {
                    path: self.path.display().to_string(),
                    line: (first + r + 1) as u64,
                    message: format!("record label {label}, expected 0 or 1"),
                });
            }
            out.targets.push(label as f32);
            out.dense.extend((1..=DENSE).map(|k| dense_transform(v(k))));
            for (t, idx) in out.indices.iter_mut().enumerate() {
                idx.push(i64::from(v(1 + DENSE + t) as u32 % self.max_ind_range));
            }
        }
        Ok(out)
    }

    /// The order to visit batches in: in order, or (with a seed) whole batches shuffled.
    ///
    /// ```
    /// # let p = std::env::temp_dir().join(format!("bin-order-{}.bin", std::process::id()));
    /// # std::fs::write(&p, vec![0u8; 160 * 10])?;
    /// let r = dlrm_kernels::data::binary::BinaryReader::open(&p, 3, 10)?;
    /// let mut order = r.order(Some(7));
    /// order.sort();
    /// assert_eq!(order, vec![0, 1, 2, 3]);
    /// # std::fs::remove_file(&p).ok();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn order(&self, shuffle_seed: Option<u64>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.batches()).collect();
        if let Some(seed) = shuffle_seed {
            let mut rng = Rng::new(seed);
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        order
    }
}

/// The MLPerf binary files of a dataset as a [`BatchSource`]: `<prefix>_train.bin` and
/// `<prefix>_test.bin` (see [`BinaryData::file`]), read in batches; the training batches in
/// order, or as whole batches shuffled anew every epoch ([`BinaryData::shuffled`]).
///
/// ```
/// use dlrm_kernels::data::binary::{BinaryData, BinaryWriter};
/// use dlrm_kernels::data::criteo::Record;
/// use dlrm_kernels::data::{BatchSource, Split};
/// let prefix = std::env::temp_dir().join(format!("bin-data-{}", std::process::id()));
/// for (split, n) in [(Split::Train, 10), (Split::Test, 3)] {
///     let mut w = BinaryWriter::create(&BinaryData::file(&prefix, split))?;
///     for _ in 0..n {
///         w.write(&Record::default())?;
///     }
///     w.finish()?;
/// }
/// let data = BinaryData::open(&prefix, 4, 2, 100)?.shuffled(7);
/// assert_eq!((data.batches(Split::Train), data.batches(Split::Test)), (3, 2));
/// let sizes: Vec<usize> = (0..3).map(|i| data.batch(Split::Train, 0, i).unwrap().len()).collect();
/// assert_eq!(sizes.iter().sum::<usize>(), 10); // every record once, in some batch order
/// # for split in [Split::Train, Split::Test] { std::fs::remove_file(BinaryData::file(&prefix, split)).ok(); }
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug)]
pub struct BinaryData {
    train: BinaryReader,
    test: BinaryReader,
    train_batches: usize,
    shuffle: Option<u64>,
    /// The training batch order of the last epoch asked for.
    order: Mutex<Option<(usize, Arc<Vec<usize>>)>>,
}

impl BinaryData {
    /// The file of `split` under `prefix`: `<prefix>_train.bin`, `<prefix>_test.bin`,
    /// `<prefix>_val.bin`.
    ///
    /// ```
    /// use dlrm_kernels::data::{binary::BinaryData, Split};
    /// let f = BinaryData::file(std::path::Path::new("/d/day_processed"), Split::Test);
    /// assert_eq!(f, std::path::Path::new("/d/day_processed_test.bin"));
    /// ```
    pub fn file(prefix: &Path, split: Split) -> PathBuf {
        let mut name = prefix.as_os_str().to_os_string();
        name.push(format!("_{}.bin", split.name()));
        PathBuf::from(name)
    }

    /// Map the training and test files under `prefix`, for training batches of
    /// `batch_size` and test batches of `test_batch_size` samples, categorical values taken
    /// `mod max_ind_range`; every training batch of the file, in order.
    ///
    /// # Errors
    ///
    /// Those of [`BinaryReader::open`], for either file.
    ///
    /// ```
    /// use dlrm_kernels::data::binary::BinaryData;
    /// let err = BinaryData::open(std::path::Path::new("/nonexistent/x"), 4, 4, 10).unwrap_err();
    /// assert!(err.to_string().starts_with("/nonexistent/x_train.bin: "));
    /// ```
    pub fn open(
        prefix: &Path,
        batch_size: usize,
        test_batch_size: usize,
        max_ind_range: u32,
    ) -> Result<Self> {
        let train =
            BinaryReader::open(&Self::file(prefix, Split::Train), batch_size, max_ind_range)?;
        let test = BinaryReader::open(
            &Self::file(prefix, Split::Test),
            test_batch_size,
            max_ind_range,
        )?;
        Ok(BinaryData {
            train_batches: train.batches(),
            train,
            test,
            shuffle: None,
            order: Mutex::new(None),
        })
    }

    /// The same data, training on at most `n` batches per epoch (`None` or 0: all of them).
    ///
    /// ```
    /// # use dlrm_kernels::data::{binary::{BinaryData, BinaryWriter}, criteo::Record, BatchSource, Split};
    /// # let prefix = std::env::temp_dir().join(format!("bin-cap-{}", std::process::id()));
    /// # for split in [Split::Train, Split::Test] {
    /// #     let mut w = BinaryWriter::create(&BinaryData::file(&prefix, split))?;
    /// #     for _ in 0..10 { w.write(&Record::default())?; }
    /// #     w.finish()?;
    /// # }
    /// let data = BinaryData::open(&prefix, 2, 2, 100)?.with_train_batches(Some(3));
    /// assert_eq!(data.batches(Split::Train), 3);
    /// # for split in [Split::Train, Split::Test] { std::fs::remove_file(BinaryData::file(&prefix, split)).ok(); }
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn with_train_batches(mut self, n: Option<usize>) -> Self {
        let all = self.train.batches();
        self.train_batches = n.filter(|&n| n > 0).map_or(all, |n| n.min(all));
        self
    }

    /// The same data with its training batches shuffled as whole batches, anew every
    /// epoch (epoch `e` from seed `seed ^ e`); see the [type's example](BinaryData).
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        *self.order.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        self
    }

    /// The reader of a split (the test reader for [`Split::Validation`], which this source
    /// does not have).
    ///
    /// ```
    /// # use dlrm_kernels::data::{binary::{BinaryData, BinaryWriter}, criteo::Record, Split};
    /// # let prefix = std::env::temp_dir().join(format!("bin-reader-{}", std::process::id()));
    /// # for split in [Split::Train, Split::Test] {
    /// #     let mut w = BinaryWriter::create(&BinaryData::file(&prefix, split))?;
    /// #     for _ in 0..10 { w.write(&Record::default())?; }
    /// #     w.finish()?;
    /// # }
    /// let data = BinaryData::open(&prefix, 4, 5, 100)?;
    /// assert_eq!(data.reader(Split::Test).batches(), 2);
    /// # for split in [Split::Train, Split::Test] { std::fs::remove_file(BinaryData::file(&prefix, split)).ok(); }
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn reader(&self, split: Split) -> &BinaryReader {
        match split {
            Split::Train => &self.train,
            Split::Test | Split::Validation => &self.test,
        }
    }

    /// The training batch order of `epoch` (kept for the last epoch asked for).
    fn order(&self, epoch: usize) -> Arc<Vec<usize>> {
        let mut cached = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((e, order)) = &*cached
            && *e == epoch
        {
            return Arc::clone(order);
        }
        let seed = self.shuffle.map(|s| s ^ epoch as u64);
        let order = Arc::new(self.train.order(seed));
        *cached = Some((epoch, Arc::clone(&order)));
        order
    }
}

impl BatchSource for BinaryData {
    fn dense_features(&self) -> usize {
        DENSE
    }

    fn table_rows(&self) -> Vec<usize> {
        vec![self.train.max_ind_range as usize; SPARSE]
    }

    fn batches(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train_batches,
            Split::Test => self.test.batches(),
            Split::Validation => 0,
        }
    }

    fn batch(&self, split: Split, epoch: usize, i: usize) -> Result<MiniBatch> {
        check_batch_number(split, i, self.batches(split))?;
        match split {
            Split::Train if self.shuffle.is_some() => self.train.batch(self.order(epoch)[i]),
            _ => self.reader(split).batch(i),
        }
    }
}

/// Convert `split`'s raw text to the binary format at `out`; returns (records written,
/// malformed lines skipped).
///
/// # Errors
///
/// Those of the raw reader ([`Error::Data`] for a malformed line unless skipping) and of
/// writing; a failed conversion removes the partial output.
pub fn convert(
    parts: Vec<crate::data::criteo::FilePart>,
    on_malformed: crate::data::criteo::OnMalformed,
    out: &Path,
) -> Result<(u64, u64)> {
    let tmp = out.with_extension("partial");
    let result = (|| {
        let mut reader = crate::data::criteo::RawReader::new(parts, on_malformed);
        let mut w = BinaryWriter::create(&tmp)?;
        while let Some(rec) = reader.next_record()? {
            w.write(rec)?;
        }
        let n = w.finish()?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok((n, reader.skipped()))
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}
