//! The error type of the microkernel layer.

use std::fmt;

use crate::cpu::Features;
use crate::isa::Isa;

/// Everything that can go wrong when describing or running a microkernel.
///
/// Every variant names what was wrong and where, so a message is enough to find the bad
/// argument without a debugger. Kernels check their arguments before they write anything:
/// when a call returns an error, no output has been touched.
///
/// ```
/// use dlrm_microkernels::{Accum, Brgemm, BrgemmDesc, KernelError};
///
/// let mut desc = BrgemmDesc::f32(4, 4, 4);
/// desc.lda = 2; // smaller than k
/// let err = Brgemm::new(desc).unwrap_err();
/// assert!(matches!(err, KernelError::LeadingDimension { name: "lda", .. }));
/// assert_eq!(err.to_string(), "lda = 2 is smaller than k = 4");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelError {
    /// A leading dimension is smaller than the row it must hold.
    LeadingDimension {
        /// `"lda"`, `"ldb"` or `"ldc"`.
        name: &'static str,
        /// The value given.
        value: usize,
        /// The dimension it must be at least (`"k"` or `"n"`).
        min_name: &'static str,
        /// The smallest legal value.
        min: usize,
    },
    /// The input and output data types are not a supported combination.
    UnsupportedTypes {
        /// Input (A and B) type.
        input: &'static str,
        /// Output (C) type.
        output: &'static str,
    },
    /// A combination of options the kernels do not support.
    Unsupported {
        /// What, e.g. `"a transposed A with bf16 input"`.
        what: &'static str,
    },
    /// `run` was given data of another type than the descriptor names.
    TypeMismatch {
        /// `"A/B"` or `"C"`.
        operand: &'static str,
        /// Type named in the descriptor.
        expected: &'static str,
        /// Type passed to `run`.
        got: &'static str,
    },
    /// `run` was given a batch of another kind than the descriptor names.
    BatchKindMismatch {
        /// Kind named in the descriptor.
        expected: &'static str,
        /// Kind passed to `run`.
        got: &'static str,
    },
    /// Two lists that must have the same length do not.
    LengthMismatch {
        /// What the lists are, e.g. `"a_offsets and b_offsets"`.
        what: &'static str,
        /// Length of the first.
        left: usize,
        /// Length of the second.
        right: usize,
    },
    /// A slice is too short for the accesses the descriptor implies.
    SliceTooShort {
        /// Which operand: `"A"`, `"B"`, `"C"`, or a conversion's `"src"`/`"dst"`.
        operand: &'static str,
        /// The batch position whose access does not fit, where there is one.
        batch_index: Option<usize>,
        /// Elements needed.
        needed: usize,
        /// Elements given.
        len: usize,
    },
    /// A size computation overflowed `usize`.
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// The requested ISA is not available on this CPU.
    IsaUnavailable {
        /// What was asked for.
        requested: Isa,
        /// The features it needs that this CPU (or its operating system) lacks.
        missing: Features,
        /// The best ISA this CPU has.
        best: Isa,
    },
    /// The CPU has the backend's instructions but the operating system refused them to this
    /// process (AMX tile state).
    IsaRefused {
        /// What was asked for.
        requested: Isa,
        /// The OS's answer.
        reason: String,
    },
    /// An environment variable that selects a kernel setting has a value it does not know.
    UnknownSetting {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The values it takes.
        expected: &'static str,
    },
    /// The `DLRM_ISA` environment variable (or a string parsed as an ISA) names no ISA.
    UnknownIsa {
        /// The string given.
        value: String,
    },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::LeadingDimension {
                name,
                value,
                min_name,
                min,
            } => write!(f, "{name} = {value} is smaller than {min_name} = {min}"),
            KernelError::UnsupportedTypes { input, output } => write!(
                f,
                "unsupported data types: {input} inputs with {output} output \
                 (supported: f32 -> f32, bf16 -> f32, bf16 -> bf16)"
            ),
            KernelError::Unsupported { what } => write!(f, "unsupported: {what}"),
            KernelError::TypeMismatch {
                operand,
                expected,
                got,
            } => write!(
                f,
                "{operand} has type {got} but the descriptor says {expected}"
            ),
            KernelError::BatchKindMismatch { expected, got } => write!(
                f,
                "batch of kind {got} given to a kernel described for {expected} batches"
            ),
            KernelError::LengthMismatch { what, left, right } => {
                write!(f, "{what} differ in length: {left} vs {right}")
            }
            KernelError::SliceTooShort {
                operand,
                batch_index,
                needed,
                len,
            } => match batch_index {
                Some(i) => write!(
                    f,
                    "{operand} slice too short at batch position {i}: needs {needed} elements, has {len}"
                ),
                None => write!(
                    f,
                    "{operand} slice too short: needs {needed} elements, has {len}"
                ),
            },
            KernelError::Overflow { what } => write!(f, "size overflow computing {what}"),
            KernelError::IsaUnavailable {
                requested,
                missing,
                best,
            } => write!(
                f,
                "ISA {requested} is not available on this CPU (it lacks {missing}; \
                 best available: {best})"
            ),
            KernelError::IsaRefused { requested, reason } => {
                write!(f, "ISA {requested} cannot be used: {reason}")
            }
            KernelError::UnknownSetting {
                variable,
                value,
                expected,
            } => write!(
                f,
                "{variable}={value:?} is not a known setting (expected one of: {expected})"
            ),
            KernelError::UnknownIsa { value } => {
                write!(f, "unknown ISA {value:?}: expected one of ")?;
                for (i, isa) in Isa::ALL.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{isa}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for KernelError {}

/// `Err(KernelError::LengthMismatch)` unless `left == right`.
pub(crate) fn same_len(what: &'static str, left: usize, right: usize) -> Result<(), KernelError> {
    if left == right {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch { what, left, right })
    }
}

/// `Err(KernelError::SliceTooShort)` unless `len >= needed`.
pub(crate) fn fits(operand: &'static str, needed: usize, len: usize) -> Result<(), KernelError> {
    if len >= needed {
        Ok(())
    } else {
        Err(KernelError::SliceTooShort {
            operand,
            batch_index: None,
            needed,
            len,
        })
    }
}
