//! The DLRM feature interaction: `dot` (pairwise dot products of the dense vector and the
//! pooled embeddings) and `cat` (concatenation), forward and backward.
//!
//! Per sample, `Z = [x, e_1, ..., e_T]` stacks the bottom MLP's output `x` and the `T` pooled
//! embeddings (all of width `d`), `F = T + 1` vectors. `dot` outputs `[x, p]` where `p` holds
//! `Z_i . Z_j` for `i` in `0..F` and `j` in `0..i` (`0..=i` with self-interaction), in that
//! order: `d + F(F-1)/2` (or `d + F(F+1)/2`) values, as the DLRM reference orders them. Its
//! backward is `dZ = S Z` with `S` the symmetrised product gradient (the diagonal doubled).
//! Both run on [`crate::kernels::pair_dots`], straight on the rows of `Z` (`d` across the
//! SIMD lanes, no transposed copy), with the same bits on every ISA.
//!
//! The input is every sample's `Z` where it lies: row-major `[B][F][d]` f32 (the model
//! writes the bottom MLP's output into slot 0 and pools the tables into slots 1..), so no
//! copy is made to stack it. The output is written straight into the blocked input of the
//! top MLP, and the backward writes `dZ` in the layout of `Z`.
//!
//! ```
//! use dlrm_kernels::blocked::Blocked;
//! use dlrm_kernels::interaction::{Interaction, InteractionOp};
//!
//! let it = Interaction::new(InteractionOp::Dot, false, 2, 2)?; // T = 2 tables, d = 2
//! assert_eq!((it.output_dim(), it.stacked_width()), (2 + 3, 3 * 2));
//! let z = [1.0, 0.0, /* table 0 */ 1.0, 2.0, /* table 1 */ 3.0, 4.0];
//! let mut out = Blocked::<f32>::zeros(1, 5, 1, 5)?;
//! it.forward(&z, &mut out)?;
//! let row: Vec<f32> = (0..5).map(|c| out.get(0, c)).collect();
//! // [x, x.e1, x.e2, e1.e2]
//! assert_eq!(row, [1.0, 0.0, 1.0, 3.0, 11.0]);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use rayon::prelude::*;

use crate::blocked::Blocked;
use crate::error::{Error, Result, check_len, parse_name};
use crate::kernels::convert::Converter;
use crate::kernels::pair_dots::PairDots;
use crate::kernels::{Element, eltwise};

/// Which interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InteractionOp {
    /// Pairwise dot products (the DLRM default).
    #[default]
    Dot,
    /// Concatenation `[x, e_1, ..., e_T]`.
    Cat,
}

impl InteractionOp {
    /// Both operators.
    pub const ALL: [InteractionOp; 2] = [InteractionOp::Dot, InteractionOp::Cat];

    /// Name as the trainer's `--arch-interaction-op` takes it.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::interaction::InteractionOp::Cat.name(), "cat");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            InteractionOp::Dot => "dot",
            InteractionOp::Cat => "cat",
        }
    }
}

impl std::str::FromStr for InteractionOp {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_name(s, "interaction", &Self::ALL, Self::name)
    }
}

impl std::fmt::Display for InteractionOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A configured interaction. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Interaction {
    op: InteractionOp,
    self_interaction: bool,
    tables: usize,
    dim: usize,
    dots: PairDots,
    cvt: Converter,
}

impl Interaction {
    /// An interaction of the dense vector with `tables` pooled embeddings of width `dim`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `dim` or `tables` is zero.
    ///
    /// ```
    /// use dlrm_kernels::interaction::{Interaction, InteractionOp};
    /// assert!(Interaction::new(InteractionOp::Dot, false, 26, 0).is_err());
    /// assert!(Interaction::new(InteractionOp::Dot, false, 0, 16).is_err());
    /// ```
    pub fn new(
        op: InteractionOp,
        self_interaction: bool,
        tables: usize,
        dim: usize,
    ) -> Result<Self> {
        if dim == 0 || tables == 0 {
            return Err(Error::Config(format!(
                "an interaction needs at least one table and a positive dimension, got {tables} tables of dimension {dim}"
            )));
        }
        if checked_output_dim(op, self_interaction, tables, dim).is_none() {
            return Err(Error::Config(format!(
                "the interaction of {tables} tables of dimension {dim}: its width overflows"
            )));
        }
        Ok(Interaction {
            op,
            self_interaction,
            tables,
            dim,
            dots: PairDots::new()?,
            cvt: Converter::new()?,
        })
    }

    /// Width of the output: `d + F(F-1)/2` (dot), `d + F(F+1)/2` (dot with self-interaction)
    /// or `d F` (cat), with `F = tables + 1`.
    ///
    /// ```
    /// use dlrm_kernels::interaction::{Interaction, InteractionOp};
    /// // The DLRM small config: 8 tables, d = 64: 64 + 9 * 8 / 2 = 100.
    /// assert_eq!(Interaction::new(InteractionOp::Dot, false, 8, 64)?.output_dim(), 100);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn output_dim(&self) -> usize {
        checked_output_dim(self.op, self.self_interaction, self.tables, self.dim)
            .expect("checked by new")
    }

    /// Floats per sample of the stacked input `Z` and of its gradient: `F d`, with
    /// `F = tables + 1`.
    ///
    /// ```
    /// use dlrm_kernels::interaction::{Interaction, InteractionOp};
    /// assert_eq!(Interaction::new(InteractionOp::Dot, false, 8, 64)?.stacked_width(), 9 * 64);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn stacked_width(&self) -> usize {
        (self.tables + 1) * self.dim
    }

    /// FLOP of forward + backward for a batch: `2 d` per pair forward, `2 d F` per vector
    /// backward (`dZ = S Z`); 0 for `cat`.
    ///
    /// ```
    /// use dlrm_kernels::interaction::{Interaction, InteractionOp};
    /// let it = Interaction::new(InteractionOp::Dot, false, 1, 4)?;
    /// // F = 2: one pair forward (8 FLOP), 2 x 2 x 4 multiply-adds backward (32 FLOP).
    /// assert_eq!(it.flops(1), 8 + 32);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn flops(&self, batch: usize) -> u64 {
        match self.op {
            InteractionOp::Dot => {
                let f = self.tables + 1;
                let pairs = PairDots::pairs(f, self.self_interaction);
                (2 * self.dim * (pairs + f * f) * batch) as u64
            }
            InteractionOp::Cat => 0,
        }
    }

    fn check(&self, batch: usize, z: usize, cols: usize) -> Result<()> {
        check_len(
            "interaction input length ([B][tables + 1][dim])",
            batch * self.stacked_width(),
            z,
        )?;
        check_len("interaction output columns", self.output_dim(), cols)
    }

    /// Forward: the interaction of each sample of `z` (`[B][F][d]`) into row `b` of `out`
    /// (the top MLP's blocked input, `batch x output_dim`); padding rows are zeroed.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `z` or `out` do not match the batch (`out.rows()`).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::interaction::{Interaction, InteractionOp};
    /// let it = Interaction::new(InteractionOp::Cat, false, 1, 2)?;
    /// let mut out = Blocked::<f32>::zeros(1, 4, 1, 4)?;
    /// it.forward(&[1.0, 2.0, 3.0, 4.0], &mut out)?;
    /// assert_eq!(out.as_slice(), &[1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn forward<T: Element>(&self, z: &[f32], out: &mut Blocked<T>) -> Result<()> {
        let batch = out.rows();
        self.check(batch, z.len(), out.cols())?;
        let (bn, bc, cb) = (out.block_rows(), out.block_cols(), out.col_blocks());
        let (width, zw) = (self.output_dim(), self.stacked_width());
        out.as_mut_slice()
            .par_chunks_mut(cb * bn * bc)
            .enumerate()
            .try_for_each_init(
                || vec![0f32; width],
                |row, (nb, panel)| -> Result<()> {
                    for r in 0..bn {
                        let b = nb * bn + r;
                        if b < batch {
                            self.row(&z[b * zw..][..zw], row)?;
                        } else {
                            row.fill(0.0);
                        }
                        for (j, chunk) in row.chunks(bc).enumerate() {
                            let at = (j * bn + r) * bc;
                            eltwise::store(&self.cvt, chunk, &mut panel[at..at + chunk.len()]);
                        }
                    }
                    Ok(())
                },
            )
    }

    /// The output row of the sample whose stacked input is `z` (`[F][d]`).
    fn row(&self, z: &[f32], row: &mut [f32]) -> Result<()> {
        let (d, f) = (self.dim, self.tables + 1);
        match self.op {
            InteractionOp::Cat => row.copy_from_slice(z),
            InteractionOp::Dot => {
                row[..d].copy_from_slice(&z[..d]);
                self.dots
                    .forward(z, f, d, self.self_interaction, &mut row[d..])?;
            }
        }
        Ok(())
    }

    /// Backward: from the gradient w.r.t. the output (the top MLP's input gradient), the
    /// gradient w.r.t. `z`, in its layout (`[B][F][d]`: the dense vector's in slot 0, the
    /// pooled embeddings' in slots 1..), overwritten.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] on a length mismatch (nothing is written).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::interaction::{Interaction, InteractionOp};
    /// let it = Interaction::new(InteractionOp::Dot, false, 1, 1)?; // out = [x, x e]
    /// let d_out = Blocked::<f32>::from_row_major(&[1.0, 1.0], 1, 2, 1, 2)?;
    /// let mut dz = [0f32; 2];
    /// it.backward(&[2.0, 3.0], &d_out, &mut dz)?; // z = [x, e] = [2, 3]
    /// assert_eq!(dz, [1.0 + 3.0, 2.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward<T: Element>(
        &self,
        z: &[f32],
        d_out: &Blocked<T>,
        dz: &mut [f32],
    ) -> Result<()> {
        let batch = d_out.rows();
        self.check(batch, z.len(), d_out.cols())?;
        check_len("interaction input gradient length", z.len(), dz.len())?;
        if batch == 0 {
            return Ok(());
        }
        let (bn, bc) = (d_out.block_rows(), d_out.block_cols());
        let (d, f, width, zw) = (
            self.dim,
            self.tables + 1,
            self.output_dim(),
            self.stacked_width(),
        );
        dz.par_chunks_mut(bn * zw).enumerate().try_for_each_init(
            || vec![0f32; width],
            |g, (nb, dz_panel)| -> Result<()> {
                for r in 0..dz_panel.len() / zw {
                    let b = nb * bn + r;
                    for (j, chunk) in g.chunks_mut(bc).enumerate() {
                        eltwise::load(
                            &self.cvt,
                            &d_out.block(nb, j)[r * bc..][..chunk.len()],
                            chunk,
                        );
                    }
                    let dzb = &mut dz_panel[r * zw..][..zw];
                    match self.op {
                        InteractionOp::Cat => dzb.copy_from_slice(g),
                        InteractionOp::Dot => {
                            let diag = self.self_interaction;
                            let zb = &z[b * zw..][..zw];
                            self.dots.backward(zb, f, d, diag, &g[d..], dzb)?;
                            // The dense vector is also passed through as is (one
                            // addition, commutative: the same bits in either order).
                            for (x, g) in dzb[..d].iter_mut().zip(&g[..d]) {
                                *x += g;
                            }
                        }
                    }
                }
                Ok(())
            },
        )
    }
}

/// [`Interaction::output_dim`] of an interaction of these sizes, `None` on overflow.
pub(crate) fn checked_output_dim(
    op: InteractionOp,
    self_interaction: bool,
    tables: usize,
    dim: usize,
) -> Option<usize> {
    let f = tables.checked_add(1)?;
    match (op, self_interaction) {
        (InteractionOp::Dot, false) => dim.checked_add(f.checked_mul(f - 1)? / 2),
        (InteractionOp::Dot, true) => dim.checked_add(f.checked_mul(f.checked_add(1)?)? / 2),
        (InteractionOp::Cat, _) => dim.checked_mul(f),
    }
}
