//! The DLRM feature interaction: `dot` (pairwise dot products of the dense vector and the
//! pooled embeddings) and `cat` (concatenation), forward and backward.
//!
//! Per sample, `Z = [x, e_1, ..., e_T]` stacks the bottom MLP's output `x` and the `T` pooled
//! embeddings (all of width `d`), `F = T + 1` vectors. `dot` outputs `[x, p]` where `p` holds
//! `Z_i . Z_j` for `i` in `0..F` and `j` in `0..i` (`0..=i` with self-interaction), in that
//! order: `d + F(F-1)/2` (or `d + F(F+1)/2`) values, as the DLRM reference orders them. Its
//! backward is `dZ = S Z` with `S` the symmetrised product gradient (the diagonal doubled).
//! Both products run on the BRGEMM kernel: `Z Z^T` and `Z^T S` from one transposed copy of
//! `Z` (stacked with two row copies, then transposed by [`crate::kernels::reorder`]).
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
use crate::kernels::reorder::Reorder;
use crate::kernels::{ALayout, Batch, Brgemm, BrgemmDesc, Element, eltwise};

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
    /// `P = Z Z^T` from `Z^T` (`[d][F]`, read as a transposed A and as B).
    products: Brgemm,
    /// `dZ^T = Z^T S`.
    back: Brgemm,
    cvt: Converter,
    reorder: Reorder,
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
        let f = tables + 1;
        let mut products = BrgemmDesc::f32(f, f, dim);
        products.a_layout = ALayout::Transposed;
        products.lda = f;
        let back = BrgemmDesc::f32(dim, f, f);
        Ok(Interaction {
            op,
            self_interaction,
            tables,
            dim,
            products: Brgemm::new(products)?,
            back: Brgemm::new(back)?,
            cvt: Converter::new()?,
            reorder: Reorder::new()?,
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
        let f = self.tables + 1;
        match (self.op, self.self_interaction) {
            (InteractionOp::Dot, false) => self.dim + f * (f - 1) / 2,
            (InteractionOp::Dot, true) => self.dim + f * (f + 1) / 2,
            (InteractionOp::Cat, _) => self.dim * f,
        }
    }

    /// FLOP of forward + backward for a batch (the two BRGEMMs, or 0 for `cat`).
    ///
    /// ```
    /// use dlrm_kernels::interaction::{Interaction, InteractionOp};
    /// let it = Interaction::new(InteractionOp::Dot, false, 1, 4)?;
    /// // Forward Z Z^T and backward Z^T S: 2 F F d FLOP each, F = 2.
    /// assert_eq!(it.flops(1), 2 * (2 * 2 * 2 * 4));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn flops(&self, batch: usize) -> u64 {
        match self.op {
            InteractionOp::Dot => {
                let f = (self.tables + 1) as u64;
                2 * 2 * f * f * self.dim as u64 * batch as u64
            }
            InteractionOp::Cat => 0,
        }
    }

    /// Pairs `(i, j)` in output order.
    fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let f = self.tables + 1;
        let extra = usize::from(self.self_interaction);
        (0..f).flat_map(move |i| (0..i + extra).map(move |j| (i, j)))
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

    /// `Z^T` (`[d][F]`) of sample `b`, through `z` (`Z`, `[F][d]`: two row copies).
    fn stack_transposed(
        &self,
        dense: &[f32],
        emb: &[f32],
        b: usize,
        z: &mut [f32],
        zt: &mut [f32],
    ) {
        let (d, t, f) = (self.dim, self.tables, self.tables + 1);
        z[..d].copy_from_slice(&dense[b * d..(b + 1) * d]);
        z[d..f * d].copy_from_slice(&emb[b * t * d..(b + 1) * t * d]);
        // Scratch sizes are the interaction's own: the transpose cannot fail.
        self.reorder.transpose(z, f, d, zt).expect("Z size");
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
                || {
                    let zs = (vec![0f32; d * f], vec![0f32; d * f]);
                    (zs, vec![0f32; f * f], vec![0f32; width])
                },
                |(zs, p, row), (nb, panel)| -> Result<()> {
                    for r in 0..bn {
                        let b = nb * bn + r;
                        if b < batch {
                            self.row(dense, emb, b, zs, p, row)?;
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

    /// The output row of sample `b`.
    fn row(
        &self,
        dense: &[f32],
        emb: &[f32],
        b: usize,
        (z, zt): &mut (Vec<f32>, Vec<f32>),
        p: &mut [f32],
        row: &mut [f32],
    ) -> Result<()> {
        let (d, t, f) = (self.dim, self.tables, self.tables + 1);
        row[..d].copy_from_slice(&dense[b * d..(b + 1) * d]);
        match self.op {
            InteractionOp::Cat => row[d..].copy_from_slice(&emb[b * t * d..(b + 1) * t * d]),
            InteractionOp::Dot => {
                self.stack_transposed(dense, emb, b, z, zt);
                self.products.run(Batch::strided(zt, zt, 1), p)?;
                for (o, (i, j)) in row[d..].iter_mut().zip(self.pairs()) {
                    *o = p[i * f + j];
                }
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
                || {
                    let zs = (vec![0f32; d * f], vec![0f32; d * f]);
                    (zs, vec![0f32; f * f], vec![0f32; width], vec![0f32; d * f])
                },
                |((z, zt), s, g, dzt), (nb, (dd, de))| -> Result<()> {
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
                                s.fill(0.0);
                                for (gv, (i, j)) in g[d..].iter().zip(self.pairs()) {
                                    s[i * f + j] += gv;
                                    s[j * f + i] += gv;
                                }
                                self.stack_transposed(dense, emb, b, z, zt);
                                self.back.run(Batch::strided(zt, s, 1), dzt)?;
                                // dZ = (dZ^T)^T, `[F][d]`, reusing `z`.
                                self.reorder.transpose(dzt, d, f, z)?;
                                for (x, g) in dx.iter_mut().zip(&z[..d]) {
                                    *x += g;
                                }
                                de[r * t * d..(r + 1) * t * d].copy_from_slice(&z[d..f * d]);
                            }
                        }
                    }
                    Ok(())
                },
            )
    }
}
