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
//! The output is written straight into the blocked input of the top MLP, so no row-major
//! copy is made. Inputs: `dense` row-major `[B][d]`, `emb` row-major `[B][T][d]`, f32.
//!
//! ```
//! use dlrm_kernels::blocked::Blocked;
//! use dlrm_kernels::interaction::{Interaction, InteractionOp};
//!
//! let it = Interaction::new(InteractionOp::Dot, false, 2, 2)?; // T = 2 tables, d = 2
//! assert_eq!(it.output_dim(), 2 + 3);
//! let dense = [1.0, 0.0];
//! let emb = [1.0, 2.0, /* table 1 */ 3.0, 4.0];
//! let mut out = Blocked::<f32>::zeros(1, 5, 1, 5)?;
//! it.forward(&dense, &emb, &mut out)?;
//! let row: Vec<f32> = (0..5).map(|c| out.get(0, c)).collect();
//! // [x, x.e1, x.e2, e1.e2]
//! assert_eq!(row, [1.0, 0.0, 1.0, 3.0, 11.0]);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use rayon::prelude::*;

use crate::blocked::Blocked;
use crate::error::{Error, Result, check_len};
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

    fn check(&self, batch: usize, dense: usize, emb: usize, cols: usize) -> Result<()> {
        check_len("interaction dense input length", batch * self.dim, dense)?;
        check_len(
            "interaction embedding input length",
            batch * self.tables * self.dim,
            emb,
        )?;
        check_len("interaction output columns", self.output_dim(), cols)
    }

    /// `Z` (`[F][d]`) of sample `b`: its dense vector, then its pooled embeddings.
    fn stack(&self, dense: &[f32], emb: &[f32], b: usize, z: &mut [f32]) {
        let (d, t) = (self.dim, self.tables);
        z[..d].copy_from_slice(&dense[b * d..(b + 1) * d]);
        z[d..(t + 1) * d].copy_from_slice(&emb[b * t * d..(b + 1) * t * d]);
    }

    /// Forward: the interaction of each sample into row `b` of `out` (the top MLP's blocked
    /// input, `batch x output_dim`); padding rows are zeroed.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `dense`, `emb` or `out` do not match the batch (`out.rows()`).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::interaction::{Interaction, InteractionOp};
    /// let it = Interaction::new(InteractionOp::Cat, false, 1, 2)?;
    /// let mut out = Blocked::<f32>::zeros(1, 4, 1, 4)?;
    /// it.forward(&[1.0, 2.0], &[3.0, 4.0], &mut out)?;
    /// assert_eq!(out.as_slice(), &[1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn forward<T: Element>(
        &self,
        dense: &[f32],
        emb: &[f32],
        out: &mut Blocked<T>,
    ) -> Result<()> {
        let batch = out.rows();
        self.check(batch, dense.len(), emb.len(), out.cols())?;
        let (bn, bc, cb) = (out.block_rows(), out.block_cols(), out.col_blocks());
        let (d, f, width) = (self.dim, self.tables + 1, self.output_dim());
        out.as_mut_slice()
            .par_chunks_mut(cb * bn * bc)
            .enumerate()
            .try_for_each_init(
                || (vec![0f32; d * f], vec![0f32; width]),
                |(z, row), (nb, panel)| -> Result<()> {
                    for r in 0..bn {
                        let b = nb * bn + r;
                        if b < batch {
                            self.row(dense, emb, b, z, row)?;
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

    /// The output row of sample `b` (`z`: scratch for its `Z`).
    fn row(
        &self,
        dense: &[f32],
        emb: &[f32],
        b: usize,
        z: &mut [f32],
        row: &mut [f32],
    ) -> Result<()> {
        let (d, t, f) = (self.dim, self.tables, self.tables + 1);
        row[..d].copy_from_slice(&dense[b * d..(b + 1) * d]);
        match self.op {
            InteractionOp::Cat => row[d..].copy_from_slice(&emb[b * t * d..(b + 1) * t * d]),
            InteractionOp::Dot => {
                self.stack(dense, emb, b, z);
                self.dots
                    .forward(z, f, d, self.self_interaction, &mut row[d..])?;
            }
        }
        Ok(())
    }

    /// Backward: from the gradient w.r.t. the output (the top MLP's input gradient), the
    /// gradients w.r.t. `dense` (`[B][d]`) and `emb` (`[B][T][d]`), overwritten.
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
    /// let (mut dx, mut de) = ([0f32], [0f32]);
    /// it.backward(&[2.0], &[3.0], &d_out, &mut dx, &mut de)?;
    /// assert_eq!((dx[0], de[0]), (1.0 + 3.0, 2.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward<T: Element>(
        &self,
        dense: &[f32],
        emb: &[f32],
        d_out: &Blocked<T>,
        d_dense: &mut [f32],
        d_emb: &mut [f32],
    ) -> Result<()> {
        let batch = d_out.rows();
        self.check(batch, dense.len(), emb.len(), d_out.cols())?;
        check_len("dense gradient length", dense.len(), d_dense.len())?;
        check_len("embedding gradient length", emb.len(), d_emb.len())?;
        if batch == 0 {
            return Ok(());
        }
        let (bn, bc) = (d_out.block_rows(), d_out.block_cols());
        let (d, t, f, width) = (self.dim, self.tables, self.tables + 1, self.output_dim());
        d_dense
            .par_chunks_mut(bn * d)
            .zip(d_emb.par_chunks_mut(bn * t * d))
            .enumerate()
            .try_for_each_init(
                || (vec![0f32; d * f], vec![0f32; width], vec![0f32; d * f]),
                |(z, g, dz), (nb, (dd, de))| -> Result<()> {
                    for r in 0..dd.len() / d {
                        let b = nb * bn + r;
                        for (j, chunk) in g.chunks_mut(bc).enumerate() {
                            eltwise::load(
                                &self.cvt,
                                &d_out.block(nb, j)[r * bc..][..chunk.len()],
                                chunk,
                            );
                        }
                        let dx = &mut dd[r * d..(r + 1) * d];
                        dx.copy_from_slice(&g[..d]);
                        match self.op {
                            InteractionOp::Cat => {
                                de[r * t * d..(r + 1) * t * d].copy_from_slice(&g[d..]);
                            }
                            InteractionOp::Dot => {
                                self.stack(dense, emb, b, z);
                                let diag = self.self_interaction;
                                self.dots.backward(z, f, d, diag, &g[d..], dz)?;
                                for (x, g) in dx.iter_mut().zip(&dz[..d]) {
                                    *x += g;
                                }
                                de[r * t * d..(r + 1) * t * d].copy_from_slice(&dz[d..f * d]);
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
