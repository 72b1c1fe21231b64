//! The shape of a layer and its block sizes, which the kernel backend chooses.

use crate::error::Result;
use crate::kernels::Isa;
use crate::kernels::eltwise::Activation;
use crate::kernels::tuning::Tuning;

/// Block sizes of a layer: `bn` rows of the batch, `bc` input features, `bk` output features.
///
/// ```
/// use dlrm_kernels::linear::Blocking;
/// let b = Blocking::auto(2048, 13, 512)?;
/// assert_eq!((b.bn, b.bc, b.bk), (64, 13, 64));
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blocking {
    /// Batch rows per block.
    pub bn: usize,
    /// Input features per block.
    pub bc: usize,
    /// Output features per block.
    pub bk: usize,
}

/// The block sizes the active kernel backend prefers ([`Tuning::for_backend`] of
/// [`Isa::active`]): its block, and the widest input taken as one block.
///
/// # Errors
///
/// Those of [`Isa::active`] and [`Tuning::for_backend`] (a bad `DLRM_ISA` or
/// `DLRM_BF16_GEMM`).
///
/// ```
/// let t = dlrm_kernels::linear::active_tuning()?;
/// assert!(t.block >= 1 && t.whole_input_max >= t.block);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn active_tuning() -> Result<Tuning> {
    Ok(Tuning::for_backend(Isa::active()?)?)
}

/// The block for a dimension: the dimension itself up to the backend's block
/// ([`Tuning::block`]), else that block (padded).
///
/// ```
/// use dlrm_kernels::kernels::{tuning::Tuning, Isa};
/// use dlrm_kernels::linear::default_block;
/// let t = Tuning::for_backend(Isa::Portable)?;
/// assert_eq!((default_block(1000, &t), default_block(13, &t)), (t.block, 13));
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn default_block(dim: usize, tuning: &Tuning) -> usize {
    dim.clamp(1, tuning.block.max(1))
}

/// The block for the input features of a network: the whole width up to the backend's
/// [`Tuning::whole_input_max`] (it is the BRGEMM's reduced dimension, which any length
/// serves well, and a width such as 100 would waste 28% on padding to 128 in 64-blocks),
/// else the backend's block.
///
/// ```
/// use dlrm_kernels::kernels::{tuning::Tuning, Isa};
/// use dlrm_kernels::linear::input_block;
/// let t = Tuning::for_backend(Isa::Portable)?;
/// assert_eq!(input_block(t.whole_input_max, &t), t.whole_input_max); // one block
/// assert_eq!(input_block(t.whole_input_max + 1, &t), t.block);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn input_block(dim: usize, tuning: &Tuning) -> usize {
    if dim <= tuning.whole_input_max {
        dim.max(1)
    } else {
        tuning.block.max(1)
    }
}

impl Blocking {
    /// Blocks that suit the active backend's kernels ([`active_tuning`]): its block (64 on
    /// the x86 backends: a 64x64x64 BRGEMM runs at the FMA peak) where a dimension is
    /// larger, the whole dimension where it is smaller; the input features whole up to the
    /// backend's limit ([`input_block`]).
    ///
    /// # Errors
    ///
    /// Those of [`active_tuning`].
    ///
    /// ```
    /// let b = dlrm_kernels::linear::Blocking::auto(100, 100_000, 1)?;
    /// assert_eq!((b.bn, b.bk), (64, 1));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn auto(batch: usize, in_features: usize, out_features: usize) -> Result<Self> {
        Ok(Self::for_tuning(
            &active_tuning()?,
            batch,
            in_features,
            out_features,
        ))
    }

    /// [`Blocking::auto`] for a given backend's choices.
    ///
    /// ```
    /// use dlrm_kernels::kernels::{tuning::Tuning, Isa};
    /// use dlrm_kernels::linear::Blocking;
    /// let t = Tuning::for_backend(Isa::Portable)?;
    /// let b = Blocking::for_tuning(&t, 2048, 13, 1);
    /// assert_eq!((b.bn, b.bc, b.bk), (t.block, 13, 1));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn for_tuning(
        tuning: &Tuning,
        batch: usize,
        in_features: usize,
        out_features: usize,
    ) -> Self {
        Blocking {
            bn: default_block(batch, tuning),
            bc: input_block(in_features, tuning),
            bk: default_block(out_features, tuning),
        }
    }
}

/// The shape of a [`Linear`](super::Linear) layer.
///
/// ```
/// use dlrm_kernels::linear::{Activation, Blocking, LinearConfig};
/// let cfg = LinearConfig::new(1024, 1024, Activation::Relu, Blocking::auto(2048, 1024, 1024)?);
/// assert_eq!(cfg.flops(2048), 3 * 2 * 2048 * 1024 * 1024);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearConfig {
    /// Input features `C`.
    pub in_features: usize,
    /// Output features `K`.
    pub out_features: usize,
    /// Nonlinearity after the affine map.
    pub activation: Activation,
    /// Block sizes.
    pub blocking: Blocking,
}

impl LinearConfig {
    /// A config from its fields.
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, LinearConfig};
    /// let c = LinearConfig::new(4, 2, Activation::None, Blocking { bn: 8, bc: 4, bk: 2 });
    /// assert_eq!(c.out_features, 2);
    /// ```
    pub fn new(
        in_features: usize,
        out_features: usize,
        activation: Activation,
        blocking: Blocking,
    ) -> Self {
        LinearConfig {
            in_features,
            out_features,
            activation,
            blocking,
        }
    }

    /// FLOP of one forward + backward-data + backward-weights pass over `batch` rows
    /// (`3 * 2 * N * C * K`, the count the benchmarks report against).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, LinearConfig};
    /// let c = LinearConfig::new(2, 3, Activation::None, Blocking { bn: 4, bc: 2, bk: 3 });
    /// assert_eq!(c.flops(4), 144);
    /// ```
    pub fn flops(&self, batch: usize) -> u64 {
        3 * 2 * batch as u64 * self.in_features as u64 * self.out_features as u64
    }
}
