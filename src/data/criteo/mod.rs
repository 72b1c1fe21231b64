//! The Criteo raw text format (Kaggle `train.txt`, Terabyte `day_0` .. `day_23`): a streaming
//! reader and the reference's train / validation / test split.
//!
//! One sample per line, tab-separated: `label`, 13 integer features `I1..I13`, 26 categorical
//! features `C1..C26` as 32-bit hexadecimal. Any field may be empty, the label too (read as 0,
//! as the reference reads it). Dense values are clipped at 0 and transformed with `ln(x + 1)`; categorical values become table rows as
//! `value mod max_ind_range`.
//!
//! Splits, as the DLRM reference makes them: Kaggle's one file is cut into 7 "days" of equal
//! line counts; Terabyte has one file per day. Training uses every day but the last; the last
//! day's first half is the test set and its second half the validation set.
//!
//! ```
//! use dlrm_kernels::data::criteo::{parse_line, Record};
//! let line = "1\t5\t\t-3\t0\t1\t2\t3\t4\t5\t6\t7\t8\t9\t\
//!             68fd1e64\t\t0\t1\t2\t3\t4\t5\t6\t7\t8\t9\ta\tb\tc\td\te\tf\t10\t11\t12\t13\t14\t15\t16\tffffffff";
//! let mut r = Record::default();
//! parse_line(line.as_bytes(), &mut r).unwrap();
//! assert_eq!(r.label, 1);
//! assert_eq!(&r.dense[..3], &[5, 0, 0]); // empty -> 0, negative clipped
//! assert_eq!((r.cat[0], r.cat[1], r.cat[25]), (0x68fd1e64, 0, 0xffffffff));
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

mod source;

pub use source::{CriteoData, CriteoFiles, CriteoOptions, DatasetKind, count_days};

use crate::data::{MiniBatch, Split};
use crate::error::{Error, Result};

/// Integer (dense) features per sample.
pub const DENSE: usize = 13;
/// Categorical (sparse) features per sample.
pub const SPARSE: usize = 26;
/// Fields per line.
pub const FIELDS: usize = 1 + DENSE + SPARSE;

/// One parsed sample, before the transforms: dense clipped at 0, categorical raw 32-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// 0 or 1 (an empty label is 0).
    pub label: i32,
    /// Integer features, negative values clipped to 0, empty fields 0.
    pub dense: [i32; DENSE],
    /// Categorical features as 32-bit values, empty fields 0.
    pub cat: [u32; SPARSE],
}

/// Why a line could not be parsed.
fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

/// Parse one line (without its newline) into `rec`.
///
/// # Errors
///
/// A description of what is malformed: the field count, a label other than 0, 1 or empty
/// (read as 0, as every empty field), a non-integer dense field, a categorical field that is
/// not hexadecimal of at most 8 digits.
///
/// ```
/// use dlrm_kernels::data::criteo::{parse_line, Record};
/// let mut r = Record::default();
/// let err = parse_line(b"1\t2\t3", &mut r).unwrap_err();
/// assert_eq!(err, "3 fields, expected 40");
/// ```
pub fn parse_line(line: &[u8], rec: &mut Record) -> std::result::Result<(), String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line.split(|&b| b == b'\t');
    let mut n = 0;
    let mut next = || {
        n += 1;
        fields.next()
    };
    // `split` gives at least one field, even for an empty line.
    let label = next().unwrap_or_default();
    rec.label = match label {
        b"" | b"0" => 0,
        b"1" => 1,
        other => {
            return Err(bad(format!(
                "label {:?}, expected 0 or 1",
                String::from_utf8_lossy(other)
            )));
        }
    };
    for j in 0..DENSE {
        let f = next()
            .ok_or(j + 1)
            .map_err(|got| bad(format!("{got} fields, expected {FIELDS}")))?;
        rec.dense[j] = parse_int(f).ok_or_else(|| {
            bad(format!(
                "dense feature I{} {:?} is not an integer",
                j + 1,
                String::from_utf8_lossy(f)
            ))
        })?;
    }
    for j in 0..SPARSE {
        let f = next()
            .ok_or(1 + DENSE + j)
            .map_err(|got| bad(format!("{got} fields, expected {FIELDS}")))?;
        rec.cat[j] = parse_hex(f).ok_or_else(|| {
            bad(format!(
                "categorical feature C{} {:?} is not 32-bit hexadecimal",
                j + 1,
                String::from_utf8_lossy(f)
            ))
        })?;
    }
    let extra = fields.count();
    if extra > 0 {
        return Err(bad(format!("{} fields, expected {FIELDS}", FIELDS + extra)));
    }
    Ok(())
}

/// A decimal integer, empty = 0, negative clipped to 0, saturating at `i32::MAX`.
fn parse_int(f: &[u8]) -> Option<i32> {
    let (neg, digits) = match f.first() {
        None => return Some(0),
        Some(b'-') => (true, &f[1..]),
        Some(_) => (false, f),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = (v * 10 + (d - b'0') as i64).min(i32::MAX as i64);
    }
    Some(if neg { 0 } else { v as i32 })
}

/// Up to 8 hex digits, empty = 0.
fn parse_hex(f: &[u8]) -> Option<u32> {
    if f.len() > 8 {
        return None;
    }
    let mut v: u32 = 0;
    for &d in f {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | x as u32;
    }
    Some(v)
}

/// The transforms applied to a record when it joins a batch.
///
/// ```
/// assert_eq!(dlrm_kernels::data::criteo::dense_transform(0), 0.0);
/// assert!((dlrm_kernels::data::criteo::dense_transform(1) - 2f32.ln()).abs() < 1e-7);
/// ```
pub fn dense_transform(x: i32) -> f32 {
    (x.max(0) as f32).ln_1p()
}

/// Which Criteo dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// Kaggle Display Advertising Challenge: one `train.txt`, split into 7 days.
    Kaggle,
    /// Criteo Terabyte: `day_0` .. `day_{N-1}` beside each other.
    Terabyte {
        /// Number of day files (24 for the full set).
        days: usize,
    },
}

/// A line range of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    /// The file.
    pub path: PathBuf,
    /// First line (0-based) in the part.
    pub first_line: u64,
    /// Lines in the part (`None`: to the end of the file).
    pub lines: Option<u64>,
}

/// Count the lines of a file (a fast pass over its bytes).
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read.
///
/// ```
/// # let p = std::env::temp_dir().join(format!("count-{}", std::process::id()));
/// # std::fs::write(&p, "a\nb\nc")?;
/// assert_eq!(dlrm_kernels::data::criteo::count_lines(&p)?, 3);
/// # std::fs::remove_file(&p).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn count_lines(path: &Path) -> Result<u64> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut last) = (0u64, b'\n');
    loop {
        let got = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        n += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[got - 1];
    }
    Ok(n + u64::from(last != b'\n'))
}

/// The file parts that make up `split` of `dataset` at `raw` (Kaggle: the `train.txt` path;
/// Terabyte: the path prefix of the day files, e.g. `/data/day` for `/data/day_0`).
///
/// # Errors
///
/// [`Error::Io`] if a file cannot be read (Kaggle's lines are counted).
///
/// ```
/// use dlrm_kernels::data::criteo::{split_parts, Dataset};
/// use dlrm_kernels::data::Split;
/// let parts = split_parts(Dataset::Terabyte { days: 3 }, std::path::Path::new("/d/day"), Split::Train)?;
/// assert_eq!(parts.len(), 2);
/// assert_eq!(parts[1].path, std::path::Path::new("/d/day_1"));
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn split_parts(dataset: Dataset, raw: &Path, split: Split) -> Result<Vec<FilePart>> {
    match dataset {
        Dataset::Terabyte { days } => {
            let day = |d: usize| {
                let mut p = raw.as_os_str().to_os_string();
                p.push(format!("_{d}"));
                PathBuf::from(p)
            };
            if days < 2 {
                return Err(Error::Config(format!(
                    "the Terabyte split needs at least 2 day files, got {days}"
                )));
            }
            Ok(match split {
                Split::Train => (0..days - 1)
                    .map(|d| FilePart {
                        path: day(d),
                        first_line: 0,
                        lines: None,
                    })
                    .collect(),
                Split::Test | Split::Validation => {
                    let last = day(days - 1);
                    let n = count_lines(&last)?;
                    let half = n.div_ceil(2);
                    let (first_line, lines) = if split == Split::Test {
                        (0, half)
                    } else {
                        (half, n - half)
                    };
                    vec![FilePart {
                        path: last,
                        first_line,
                        lines: Some(lines),
                    }]
                }
            })
        }
        Dataset::Kaggle => {
            let n = count_lines(raw)?;
            // 7 days of equal size (the last takes the remainder).
            let per_day = n / 7;
            let train = per_day * 6;
            let last = n - train;
            let half = last.div_ceil(2);
            let (first_line, lines) = match split {
                Split::Train => (0, train),
                Split::Test => (train, half),
                Split::Validation => (train + half, last - half),
            };
            Ok(vec![FilePart {
                path: raw.to_path_buf(),
                first_line,
                lines: Some(lines),
            }])
        }
    }
}

/// What to do with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMalformed {
    /// Stop with an error naming the file and line (the default).
    #[default]
    Fail,
    /// Skip the line and count it.
    Skip,
}

/// Streams [`Record`]s from file parts, never holding a whole file in memory.
///
/// ```
/// use dlrm_kernels::data::criteo::{FilePart, OnMalformed, RawReader};
/// # let p = std::env::temp_dir().join(format!("raw-doc-{}", std::process::id()));
/// let line = format!("0{}{}\n", "\t1".repeat(13), "\tab".repeat(26));
/// std::fs::write(&p, line.repeat(3))?;
/// let part = FilePart { path: p.clone(), first_line: 1, lines: None };
/// let mut reader = RawReader::new(vec![part], OnMalformed::Fail);
/// let mut n = 0;
/// while let Some(rec) = reader.next_record()? {
///     assert_eq!(rec.cat[0], 0xab);
///     n += 1;
/// }
/// assert_eq!(n, 2);
/// # std::fs::remove_file(&p).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RawReader {
    parts: std::vec::IntoIter<FilePart>,
    current: Option<(BufReader<File>, PathBuf, u64, Option<u64>)>,
    line: Vec<u8>,
    rec: Record,
    on_malformed: OnMalformed,
    skipped: u64,
    lines_read: u64,
}

impl RawReader {
    /// A reader over `parts`, in order.
    ///
    /// ```
    /// use dlrm_kernels::data::criteo::{OnMalformed, RawReader};
    /// let mut r = RawReader::new(vec![], OnMalformed::Skip);
    /// assert!(r.next_record()?.is_none());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn new(parts: Vec<FilePart>, on_malformed: OnMalformed) -> Self {
        RawReader {
            parts: parts.into_iter(),
            current: None,
            line: Vec::with_capacity(512),
            rec: Record::default(),
            on_malformed,
            skipped: 0,
            lines_read: 0,
        }
    }

    /// Malformed lines skipped so far (with [`OnMalformed::Skip`]).
    ///
    /// ```
    /// use dlrm_kernels::data::criteo::{OnMalformed, RawReader};
    /// assert_eq!(RawReader::new(vec![], OnMalformed::Skip).skipped(), 0);
    /// ```
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Lines read so far (parsed or skipped).
    ///
    /// ```
    /// use dlrm_kernels::data::criteo::{OnMalformed, RawReader};
    /// assert_eq!(RawReader::new(vec![], OnMalformed::Skip).lines_read(), 0);
    /// ```
    pub fn lines_read(&self) -> u64 {
        self.lines_read
    }

    /// Open the next part, skipping to its first line.
    fn open_next(&mut self) -> Result<bool> {
        let Some(part) = self.parts.next() else {
            return Ok(false);
        };
        let file = File::open(&part.path).map_err(|e| Error::io(&part.path, e))?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut skip = part.first_line;
        while skip > 0 {
            self.line.clear();
            let got = r
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::io(&part.path, e))?;
            if got == 0 {
                break;
            }
            skip -= 1;
        }
        self.current = Some((r, part.path, part.first_line, part.lines));
        Ok(true)
    }

    /// The next record, or `None` at the end of the last part.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] on a read error; [`Error::Data`] for a malformed line (with
    /// [`OnMalformed::Fail`]), naming the file and the 1-based line number.
    pub fn next_record(&mut self) -> Result<Option<&Record>> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                return Ok(None);
            }
            let (reader, path, line_no, left) = self.current.as_mut().expect("opened");
            if *left == Some(0) {
                self.current = None;
                continue;
            }
            self.line.clear();
            let got = reader
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::io(path, e))?;
            if got == 0 {
                self.current = None;
                continue;
            }
            *line_no += 1;
            if let Some(l) = left.as_mut() {
                *l -= 1;
            }
            self.lines_read += 1;
            let text = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            match parse_line(text, &mut self.rec) {
                Ok(()) => return Ok(Some(&self.rec)),
                Err(msg) => match self.on_malformed {
                    OnMalformed::Skip => self.skipped += 1,
                    OnMalformed::Fail => {
                        return Err(Error::Data {
                            path: path.display().to_string(),
                            line: *line_no,
                            message: msg,
                        });
                    }
                },
            }
        }
    }

    /// Up to `batch` records as a batch (`None` at the end): dense `ln(x + 1)`, one index
    /// per table, `value mod max_ind_range`.
    ///
    /// # Errors
    ///
    /// As [`RawReader::next_record`].
    ///
    /// ```
    /// use dlrm_kernels::data::criteo::{FilePart, OnMalformed, RawReader};
    /// # let p = std::env::temp_dir().join(format!("raw-doc2-{}", std::process::id()));
    /// std::fs::write(&p, format!("1{}{}\n", "\t0".repeat(13), "\t10".repeat(26)))?;
    /// let mut r = RawReader::new(vec![FilePart { path: p.clone(), first_line: 0, lines: None }], OnMalformed::Fail);
    /// let b = r.next_batch(4, 7)?.unwrap();
    /// assert_eq!((b.len(), b.indices[0][0]), (1, 16 % 7));
    /// # std::fs::remove_file(&p).ok();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_batch(&mut self, batch: usize, max_ind_range: u32) -> Result<Option<MiniBatch>> {
        let mut out = MiniBatch {
            indices: (0..SPARSE).map(|_| Vec::with_capacity(batch)).collect(),
            offsets: (0..SPARSE).map(|_| Vec::with_capacity(batch)).collect(),
            ..MiniBatch::default()
        };
        while out.len() < batch {
            let Some(rec) = self.next_record()? else {
                break;
            };
            push_record(&mut out, rec, max_ind_range);
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

/// Append one record to a batch (one index per table).
pub(crate) fn push_record(out: &mut MiniBatch, rec: &Record, max_ind_range: u32) {
    let b = out.targets.len() as i64;
    out.targets.push(rec.label as f32);
    out.dense
        .extend(rec.dense.iter().map(|&x| dense_transform(x)));
    for (t, &c) in rec.cat.iter().enumerate() {
        out.offsets[t].push(b);
        out.indices[t].push(i64::from(c % max_ind_range));
    }
}

/// Category counts of the Criteo Kaggle dataset's 26 categorical features (the reference's
/// `day_fea_count`): the table sizes of the `kaggle` preset.
///
/// ```
/// assert_eq!(dlrm_kernels::data::criteo::KAGGLE_ROWS.len(), dlrm_kernels::data::criteo::SPARSE);
/// ```
pub const KAGGLE_ROWS: [usize; SPARSE] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
    5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
];
