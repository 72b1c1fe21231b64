//! The crate's error type.

use std::fmt;

use crate::kernels::KernelError;
use crate::memory::Setting;

/// Everything that can go wrong in `dlrm-kernels`.
///
/// Messages name what was wrong and where (which table, bag and position; which layer; which
/// file and line). A call that returns an error has changed nothing.
///
/// ```
/// use dlrm_kernels::Error;
/// let e = Error::IndexOutOfRange { table: 3, bag: 17, position: 1203, index: 1_000_000, rows: 1_000_000 };
/// assert_eq!(
///     e.to_string(),
///     "table 3, bag 17, position 1203: index 1000000 >= rows 1000000"
/// );
/// let e = Error::IndexOutOfRange { table: 0, bag: 2, position: 5, index: -2, rows: 10 };
/// assert_eq!(e.to_string(), "table 0, bag 2, position 5: index -2 is negative (rows are 0 to 9)");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A microkernel refused its arguments.
    Kernel(KernelError),
    /// A tensor, slice or list has the wrong size.
    Shape {
        /// What was being checked, e.g. `"layer 2 input columns"`.
        what: String,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// A configuration that cannot work.
    Config(String),
    /// An embedding index outside `[0, rows)`.
    IndexOutOfRange {
        /// Table number.
        table: usize,
        /// Bag (sample) number.
        bag: usize,
        /// Position in the table's index list.
        position: usize,
        /// The bad index.
        index: i64,
        /// Rows in the table.
        rows: usize,
    },
    /// Malformed bag offsets.
    Offsets {
        /// Table number.
        table: usize,
        /// Bag at which the problem shows.
        bag: usize,
        /// What is wrong.
        detail: String,
    },
    /// A loss or gradient that is NaN or infinite.
    NonFinite {
        /// What was not finite, e.g. `"loss at iteration 1234"`.
        what: String,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        message: String,
    },
    /// Malformed data in a dataset file.
    Data {
        /// The file.
        path: String,
        /// 1-based line (text) or record (binary) number; 0 when it concerns the whole file.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A model too large for the memory available, or whose sizes overflow, named by the
    /// setting that makes it so (see [`crate::memory`]).
    TooLarge {
        /// The setting (its flag and checkpoint metadata entry: [`Setting::flag`],
        /// [`Setting::key`]).
        setting: Setting,
        /// Its value, as the flag takes it (`1000000000000`, `13-512-256`).
        value: String,
        /// What it would take and what there is.
        message: String,
    },
    /// A checkpoint that cannot be loaded into this model.
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong or differs.
        message: String,
    },
    /// The communication between ranks failed or cannot be set up (see [`crate::dist`]).
    Communication(String),
    /// A name that is not one of the choices (a preset, an interaction, a precision...).
    UnknownName {
        /// What was being named, e.g. `"precision"`.
        what: &'static str,
        /// The name given.
        got: String,
        /// The names that are known.
        expected: Vec<&'static str>,
    },
    /// A setting given by its user-facing name (a command-line flag) with a value that
    /// cannot work; the message names the flag and the value.
    Usage(String),
    /// A training step failed: the step and epoch, and why. The model is as it was after
    /// the step before.
    Training {
        /// The iteration (step number, from 1) that failed.
        iteration: u64,
        /// The epoch it was in (from 0).
        epoch: usize,
        /// What went wrong.
        cause: Box<Error>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Kernel(e) => write!(f, "{e}"),
            Error::Shape {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected {expected}, got {got}"),
            Error::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Error::IndexOutOfRange {
                table,
                bag,
                position,
                index,
                rows,
            } if *index < 0 => write!(
                f,
                "table {table}, bag {bag}, position {position}: index {index} is negative \
                 (rows are 0 to {})",
                rows.saturating_sub(1)
            ),
            Error::IndexOutOfRange {
                table,
                bag,
                position,
                index,
                rows,
            } => write!(
                f,
                "table {table}, bag {bag}, position {position}: index {index} >= rows {rows}"
            ),
            Error::Offsets { table, bag, detail } => {
                write!(f, "table {table}, bag {bag}: bad offsets: {detail}")
            }
            Error::NonFinite { what } => write!(f, "{what} is not finite"),
            Error::Io { path, message } => write!(f, "{path}: {message}"),
            Error::Checkpoint { path, message } => write!(f, "checkpoint {path}: {message}"),
            Error::Communication(what) => write!(f, "communication between ranks: {what}"),
            Error::TooLarge {
                setting,
                value,
                message,
            } => write!(f, "{setting} {value}: {message}"),
            Error::UnknownName {
                what,
                got,
                expected,
            } => write!(
                f,
                "unknown {what} {got:?}, expected one of: {}",
                expected.join(", ")
            ),
            Error::Usage(message) => f.write_str(message),
            Error::Training {
                iteration,
                epoch,
                cause,
            } => write!(
                f,
                "training stopped at iteration {iteration} (epoch {epoch}): {cause}"
            ),
            Error::Data {
                path,
                line: 0,
                message,
            } => write!(f, "{path}: {message}"),
            Error::Data {
                path,
                line,
                message,
            } => write!(f, "{path}:{line}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Kernel(e) => Some(e),
            Error::Training { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Self {
        Error::Kernel(e)
    }
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// Shorthand for `Result<T, dlrm_kernels::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Err(Error::Shape)` unless `got == expected`.
pub(crate) fn check_len(what: impl Into<String>, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Shape {
            what: what.into(),
            expected,
            got,
        })
    }
}

/// The value of `all` whose `name` is `s`, or [`Error::UnknownName`] listing the names: the
/// `FromStr` of the crate's named choices.
pub(crate) fn parse_name<T: Copy>(
    s: &str,
    what: &'static str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T> {
    all.iter()
        .copied()
        .find(|&v| name(v) == s)
        .ok_or_else(|| Error::UnknownName {
            what,
            got: s.to_string(),
            expected: all.iter().map(|&v| name(v)).collect(),
        })
}
