//! Blocked matrices: the layout activations and their gradients keep between MLP layers.
//!
//! A `rows x cols` matrix is cut into `bn x bc` blocks stored `[Nb][Cb][bn][bc]`
//! (`Nb = ceil(rows / bn)`, `Cb = ceil(cols / bc)`), every block contiguous and row-major, so
//! each pass of a layer is one BRGEMM per output block over contiguous operands (the passes
//! share one scheduler for that, kept here with the layout it serves). Sizes that do not
//! divide their block are padded, and the padding is always zero. Rows can be copied in and
//! out from row-major or strided f32 rows (a row `stride` floats from the next), which is
//! how an MLP's edges meet the model's stacked feature rows.
//!
//! ```
//! use dlrm_kernels::blocked::Blocked;
//!
//! // 3 x 5 with 2 x 4 blocks: 2 x 2 blocks, padded to 4 x 8.
//! let rows: Vec<f32> = (0..15).map(|x| x as f32).collect();
//! let b = Blocked::<f32>::from_row_major(&rows, 3, 5, 2, 4)?;
//! assert_eq!((b.row_blocks(), b.col_blocks()), (2, 2));
//! assert_eq!(b.block(0, 1), &[4.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0]);
//! let mut back = vec![0f32; 15];
//! b.to_row_major(&mut back)?;
//! assert_eq!(back, rows);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use rayon::prelude::*;

use crate::error::{Error, Result, check_len};
use crate::kernels::{Batch, Element, prefetch};
use crate::memory::{checked_product, try_filled};

/// A `rows x cols` matrix stored as `[Nb][Cb][bn][bc]` blocks, zero-padded.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked<T> {
    rows: usize,
    cols: usize,
    bn: usize,
    bc: usize,
    nb: usize,
    cb: usize,
    data: Vec<T>,
}

impl<T: Element> Blocked<T> {
    /// A zero matrix.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a block size is zero, or if the padded size overflows or cannot
    /// be allocated (named; nothing is allocated).
    ///
    /// ```
    /// let z = dlrm_kernels::blocked::Blocked::<f32>::zeros(100, 13, 64, 13)?;
    /// assert_eq!(z.as_slice().len(), 128 * 13);
    /// assert!(dlrm_kernels::blocked::Blocked::<f32>::zeros(1 << 58, 64, 64, 64).is_err());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn zeros(rows: usize, cols: usize, bn: usize, bc: usize) -> Result<Self> {
        if bn == 0 || bc == 0 {
            return Err(Error::Config(format!(
                "block sizes must be positive, got {bn} x {bc}"
            )));
        }
        let (nb, cb) = (rows.div_ceil(bn), cols.div_ceil(bc));
        let what = || format!("a {rows} x {cols} matrix in {bn} x {bc} blocks");
        let len = checked_product(&[nb, cb, bn, bc], what)?;
        Ok(Blocked {
            rows,
            cols,
            bn,
            bc,
            nb,
            cb,
            data: try_filled(len, T::default(), what)?,
        })
    }

    /// Block a row-major `rows x cols` f32 matrix (rounded to `T`).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `src.len() != rows * cols`; [`Error::Config`] for a zero block size.
    ///
    /// ```
    /// let b = dlrm_kernels::blocked::Blocked::<half::bf16>::from_row_major(&[1.0, 2.0], 1, 2, 1, 2)?;
    /// assert_eq!(b.get(0, 1).to_f32(), 2.0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn from_row_major(
        src: &[f32],
        rows: usize,
        cols: usize,
        bn: usize,
        bc: usize,
    ) -> Result<Self> {
        let mut b = Self::zeros(rows, cols, bn, bc)?;
        b.copy_from_row_major(src)?;
        Ok(b)
    }

    /// Overwrite with a row-major f32 matrix of the same shape (padding stays zero).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `src.len() != rows * cols` (nothing is written).
    ///
    /// ```
    /// let mut b = dlrm_kernels::blocked::Blocked::<f32>::zeros(2, 2, 2, 2)?;
    /// b.copy_from_row_major(&[1.0, 2.0, 3.0, 4.0])?;
    /// assert_eq!(b.get(1, 0), 3.0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn copy_from_row_major(&mut self, src: &[f32]) -> Result<()> {
        check_len("row-major source length", self.rows * self.cols, src.len())?;
        self.copy_from_rows(src, self.cols);
        Ok(())
    }

    /// Overwrite with the first `cols` values of each of `rows` f32 rows, row `r` at
    /// `src[r * stride..]` (padding stays zero).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `stride < cols` or `src` is shorter than the rows (nothing is
    /// written).
    ///
    /// ```
    /// let mut b = dlrm_kernels::blocked::Blocked::<f32>::zeros(2, 1, 2, 1)?;
    /// b.copy_from_strided(&[1.0, 9.0, 9.0, 2.0], 3)?; // rows at 0 and 3
    /// assert_eq!((b.get(0, 0), b.get(1, 0)), (1.0, 2.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn copy_from_strided(&mut self, src: &[f32], stride: usize) -> Result<()> {
        check_strided("strided source", self.rows, self.cols, stride, src.len())?;
        self.copy_from_rows(src, stride);
        Ok(())
    }

    /// [`Blocked::copy_from_strided`] on checked sizes.
    fn copy_from_rows(&mut self, src: &[f32], stride: usize) {
        let (rows, cols, bn, bc, cb) = (self.rows, self.cols, self.bn, self.bc, self.cb);
        self.data
            .par_chunks_mut(cb * bn * bc)
            .enumerate()
            .for_each(|(nb, panel)| {
                for (j, blk) in panel.chunks_exact_mut(bn * bc).enumerate() {
                    for r in 0..bn {
                        let row = nb * bn + r;
                        let dst = &mut blk[r * bc..(r + 1) * bc];
                        let c0 = j * bc;
                        let valid = if row < rows {
                            cols.saturating_sub(c0).min(bc)
                        } else {
                            0
                        };
                        if valid > 0 {
                            let s = &src[row * stride + c0..row * stride + c0 + valid];
                            for (d, x) in dst[..valid].iter_mut().zip(s) {
                                *d = T::from_f32(*x);
                            }
                        }
                        dst[valid..].fill(T::default());
                    }
                }
            });
    }

    /// Write the matrix out as row-major f32 (`rows * cols` values, padding dropped).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `dst.len() != rows * cols` (nothing is written).
    ///
    /// ```
    /// let b = dlrm_kernels::blocked::Blocked::<f32>::from_row_major(&[5.0; 6], 2, 3, 4, 4)?;
    /// let mut out = [0f32; 6];
    /// b.to_row_major(&mut out)?;
    /// assert_eq!(out, [5.0; 6]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn to_row_major(&self, dst: &mut [f32]) -> Result<()> {
        check_len(
            "row-major destination length",
            self.rows * self.cols,
            dst.len(),
        )?;
        self.to_rows(dst, self.cols);
        Ok(())
    }

    /// Write row `r` of the matrix to `dst[r * stride..][..cols]` as f32; the other values
    /// of `dst` are not touched.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `stride < cols` or `dst` is shorter than the rows (nothing is
    /// written).
    ///
    /// ```
    /// let b = dlrm_kernels::blocked::Blocked::<f32>::from_row_major(&[5.0, 6.0], 2, 1, 2, 1)?;
    /// let mut out = [0f32; 4];
    /// b.to_strided(&mut out, 3)?;
    /// assert_eq!(out, [5.0, 0.0, 0.0, 6.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn to_strided(&self, dst: &mut [f32], stride: usize) -> Result<()> {
        check_strided(
            "strided destination",
            self.rows,
            self.cols,
            stride,
            dst.len(),
        )?;
        self.to_rows(dst, stride);
        Ok(())
    }

    /// [`Blocked::to_strided`] on checked sizes.
    fn to_rows(&self, dst: &mut [f32], stride: usize) {
        if self.cols == 0 || self.rows == 0 {
            return;
        }
        let (cols, bn, bc, cb) = (self.cols, self.bn, self.bc, self.cb);
        dst.par_chunks_mut(stride)
            .take(self.rows)
            .enumerate()
            .for_each(|(row, out)| {
                let (nb, r) = (row / bn, row % bn);
                for (j, chunk) in out[..cols].chunks_mut(bc).enumerate() {
                    let blk = &self.data[((nb * cb + j) * bn + r) * bc..][..chunk.len()];
                    for (d, x) in chunk.iter_mut().zip(blk) {
                        *d = x.to_f32();
                    }
                }
            });
    }

    /// Logical rows.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::blocked::Blocked::<f32>::zeros(3, 4, 2, 2)?.rows(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Logical columns.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::blocked::Blocked::<f32>::zeros(3, 4, 2, 2)?.cols(), 4);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows per block (`bn`).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::blocked::Blocked::<f32>::zeros(3, 4, 2, 5)?.block_rows(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn block_rows(&self) -> usize {
        self.bn
    }

    /// Columns per block (`bc`).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::blocked::Blocked::<f32>::zeros(3, 4, 2, 5)?.block_cols(), 5);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn block_cols(&self) -> usize {
        self.bc
    }

    /// Number of row blocks (`Nb`).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::blocked::Blocked::<f32>::zeros(3, 4, 2, 2)?.row_blocks(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn row_blocks(&self) -> usize {
        self.nb
    }

    /// Number of column blocks (`Cb`).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::blocked::Blocked::<f32>::zeros(3, 4, 2, 3)?.col_blocks(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn col_blocks(&self) -> usize {
        self.cb
    }

    /// Block (`i`, `j`): `bn * bc` values, row-major.
    ///
    /// # Panics
    ///
    /// If `i >= Nb` or `j >= Cb`.
    ///
    /// ```
    /// let b = dlrm_kernels::blocked::Blocked::<f32>::zeros(4, 4, 2, 2)?;
    /// assert_eq!(b.block(1, 1).len(), 4);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn block(&self, i: usize, j: usize) -> &[T] {
        assert!(i < self.nb && j < self.cb, "block ({i}, {j}) out of range");
        let len = self.bn * self.bc;
        &self.data[(i * self.cb + j) * len..][..len]
    }

    /// Element (`r`, `c`).
    ///
    /// # Panics
    ///
    /// If `r >= rows` or `c >= cols`.
    ///
    /// ```
    /// let b = dlrm_kernels::blocked::Blocked::<f32>::from_row_major(&[1.0, 2.0], 2, 1, 1, 1)?;
    /// assert_eq!(b.get(1, 0), 2.0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn get(&self, r: usize, c: usize) -> T {
        assert!(r < self.rows && c < self.cols, "({r}, {c}) out of range");
        let (i, j) = (r / self.bn, c / self.bc);
        self.data[((i * self.cb + j) * self.bn + r % self.bn) * self.bc + c % self.bc]
    }

    /// All blocks, `[Nb][Cb][bn][bc]`.
    ///
    /// ```
    /// let b = dlrm_kernels::blocked::Blocked::<f32>::zeros(2, 2, 2, 2)?;
    /// assert_eq!(b.as_slice(), &[0.0; 4]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// All blocks, mutable. Keep the padding zero: layers rely on it.
    ///
    /// ```
    /// let mut b = dlrm_kernels::blocked::Blocked::<f32>::zeros(1, 1, 1, 1)?;
    /// b.as_mut_slice()[0] = 3.0;
    /// assert_eq!(b.get(0, 0), 3.0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Change the number of rows, keeping the blocking; contents become zero.
    ///
    /// # Panics
    ///
    /// If the padded size of `rows` rows overflows `usize` (the matrix is left as it was).
    ///
    /// ```
    /// let mut b = dlrm_kernels::blocked::Blocked::<f32>::zeros(4, 3, 2, 3)?;
    /// b.reshape_rows(5);
    /// assert_eq!((b.rows(), b.row_blocks()), (5, 3));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn reshape_rows(&mut self, rows: usize) {
        let nb = rows.div_ceil(self.bn);
        let len = checked_product(&[nb, self.cb, self.bn, self.bc], || {
            format!("{rows} rows of {} columns", self.cols)
        })
        .unwrap_or_else(|e| panic!("reshape_rows: {e}"));
        self.rows = rows;
        self.nb = nb;
        self.data.clear();
        self.data.resize(len, T::default());
    }

    /// `Ok` if this matrix is `rows x cols` blocked `bn x bc`; otherwise a [`Error::Shape`]
    /// naming `what`.
    pub(crate) fn check_shape(
        &self,
        what: &str,
        rows: usize,
        cols: usize,
        bn: usize,
        bc: usize,
    ) -> Result<()> {
        check_len(format!("{what} rows"), rows, self.rows)?;
        check_len(format!("{what} columns"), cols, self.cols)?;
        check_len(format!("{what} block rows"), bn, self.bn)?;
        check_len(format!("{what} block columns"), bc, self.bc)
    }
}

/// `Ok` if `len` values hold `rows` rows of `cols` values `stride` apart (the last row needs
/// only its `cols`).
fn check_strided(what: &str, rows: usize, cols: usize, stride: usize, len: usize) -> Result<()> {
    if stride < cols {
        return Err(Error::Shape {
            what: format!("{what} row stride (at least the columns)"),
            expected: cols,
            got: stride,
        });
    }
    let needed = match rows {
        0 => 0,
        _ => (rows - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(cols))
            .ok_or_else(|| {
                Error::Config(format!("{what}: {rows} rows of stride {stride} overflow"))
            })?,
    };
    if len < needed {
        return Err(Error::Shape {
            what: format!("{what} length ({rows} rows of stride {stride})"),
            expected: needed,
            got: len,
        });
    }
    Ok(())
}

/// The block scheduler of the linear layer's passes: one BRGEMM per output block, in
/// parallel. Block `t` of `out` (blocks of `block` elements) is (`i`, `j`) =
/// (`t / cols`, `t % cols`) and reduces panel `i` of `a` with panel `j` of `b` (panels of
/// `a_panel` and `b_panel` elements, `count` pairs each). Each block is one task, computed
/// the same way whatever the thread count.
///
/// Tasks run in `t` order on each thread, so the `cols` tasks of row `i` share A's panel `i`
/// and the first task of row `i + 1` would find its panel cold. So each task first
/// prefetches its share (1 / `cols`) of panel `i + 1` into L2. (Prefetching the next B panel
/// instead, a whole panel per task, evicts the running task's operands; the measurements
/// behind both: BENCHMARKS.md, "Measurements behind choices in the code".)
pub(crate) struct ForEachBlock<'a, T> {
    /// The output blocks.
    pub out: &'a mut [T],
    /// Elements per output block.
    pub block: usize,
    /// Output blocks per row of blocks.
    pub cols: usize,
    /// The A operand, in panels of `a_panel` elements.
    pub a: &'a [T],
    /// Elements per A panel.
    pub a_panel: usize,
    /// The B operand, in panels of `b_panel` elements.
    pub b: &'a [T],
    /// Elements per B panel.
    pub b_panel: usize,
    /// Block pairs each BRGEMM reduces over.
    pub count: usize,
    /// f32 scratch per task.
    pub scratch_len: usize,
}

impl<T: Element> ForEachBlock<'_, T> {
    /// Run `task(i, j, batch, out_block, scratch)` for every output block.
    pub fn run(
        self,
        task: impl Fn(usize, usize, Batch<'_, T>, &mut [T], &mut [f32]) -> Result<()> + Sync,
    ) -> Result<()> {
        let ForEachBlock {
            out,
            block,
            cols,
            a,
            a_panel,
            b,
            b_panel,
            count,
            scratch_len,
        } = self;
        out.par_chunks_mut(block).enumerate().try_for_each_init(
            || vec![0f32; scratch_len],
            |acc, (t, out_blk)| {
                let (i, j) = (t / cols, t % cols);
                let share = a_panel.div_ceil(cols);
                let next = (i + 1) * a_panel;
                let from = (next + j * share).min(a.len());
                let to = (next + (j + 1) * share).min(next + a_panel).min(a.len());
                prefetch::l2(&a[from..to.max(from)]);
                let batch = Batch::strided(
                    &a[i * a_panel..][..a_panel],
                    &b[j * b_panel..][..b_panel],
                    count,
                );
                task(i, j, batch, out_blk, acc)
            },
        )
    }
}
