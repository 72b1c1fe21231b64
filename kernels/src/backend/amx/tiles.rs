//! The bf16 BRGEMM on tile registers, written once against the six tile instructions
//! ([`TileOps`]) so that the hardware ([`super::hw`]) and the software model
//! ([`super::model`]) run the same blocking, packing, edges and epilogue.
//!
//! Tiles (palette 1) are 16 rows of 64 bytes. C is computed in blocks of up to 2 x 2 tiles
//! (32 x 32 f32: tiles 0 to 3), each reduced over the batch and over k in steps of 32 bf16:
//! two A tiles (4, 5: 16 rows x 32 bf16 of A) and two B tiles (6, 7: 16 k pairs x 16 columns
//! of the VNNI-2 B, as the crate packs it) feed four `tdpbf16ps`. A tile that would read
//! past an operand's edge (rows past m, columns past n, k past its end, the padding half of
//! an odd k's last pair) is first copied into a zeroed tile-sized buffer; a C tile with an
//! epilogue, a bf16 output or an edge is stored to a 16 x 16 f32 buffer, finished there
//! (bias, ReLU, mask, padding, rounding: the portable definitions) and copied out. So the
//! tile instructions only ever see whole tiles and one configuration serves every call.

use half::bf16;

use crate::Element;
use crate::abi::{BatchPtrs, Params};

/// Rows of a tile.
pub(crate) const ROWS: usize = 16;
/// Bytes of a tile row.
pub(crate) const ROW_BYTES: usize = 64;
/// bf16 values of k per A tile row (16 pairs).
const TK: usize = 32;
/// f32 columns of a C tile (and VNNI columns of a B tile).
const TN: usize = 16;

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TileConfig {
    pub palette: u8,
    pub start_row: u8,
    pub reserved: [u8; 14],
    /// Bytes per row of each tile register.
    pub colsb: [u16; 16],
    /// Rows of each tile register.
    pub rows: [u8; 16],
}

impl TileConfig {
    /// Tiles 0 to 7 all of 16 rows x 64 bytes.
    pub(crate) fn full() -> TileConfig {
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            c.colsb[t] = ROW_BYTES as u16;
            c.rows[t] = ROWS as u8;
        }
        c
    }
}

/// The tile instructions: configure, zero, load, store, `tdpbf16ps`, release. Tile
/// registers are numbered 0 to 7.
pub(crate) trait TileOps {
    /// `ldtilecfg`.
    unsafe fn configure(&mut self, cfg: &TileConfig);
    /// `tilezero tmm{t}`.
    unsafe fn zero(&mut self, t: usize);
    /// `tileloadd tmm{t}, [ptr + stride * row]`: each row reads the configured bytes.
    unsafe fn load(&mut self, t: usize, ptr: *const u8, stride: usize);
    /// `tilestored [ptr + stride * row], tmm{t}`.
    unsafe fn store(&mut self, t: usize, ptr: *mut u8, stride: usize);
    /// `tdpbf16ps tmm{c}, tmm{a}, tmm{b}`: `C[m][n] += sum_p A[m][2p] B[p][n][0] +
    /// A[m][2p + 1] B[p][n][1]` in f32.
    unsafe fn dot(&mut self, c: usize, a: usize, b: usize);
    /// `tilerelease`.
    unsafe fn release(&mut self);
}

/// A tile-sized, tile-aligned buffer.
#[repr(C, align(64))]
struct TileBuf([u8; ROWS * ROW_BYTES]);

impl TileBuf {
    fn zeroed() -> TileBuf {
        TileBuf([0; ROWS * ROW_BYTES])
    }
    fn as_bf16_mut(&mut self) -> &mut [bf16] {
        // SAFETY: 1024 bytes, 64-aligned, reinterpreted as 512 bf16 (every bit pattern is a
        // valid bf16), borrowed exclusively for as long as the result lives.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), ROWS * TK) }
    }
    fn as_f32_mut(&mut self) -> &mut [f32] {
        // SAFETY: as above, 256 f32.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), ROWS * TN) }
    }
}

/// The whole BRGEMM `C (=|+=) sum_i A_i B_i` with the epilogue, bf16 A and VNNI-2 B, on
/// tiles. Configures the tiles on entry and releases them before returning.
///
/// # Safety
///
/// As [`crate::abi::BrgemmFn`] (A row-major), and `T`'s instructions must be usable (for the
/// hardware: AMX granted to this process).
#[inline(always)]
pub(crate) unsafe fn brgemm<T: TileOps, O: Element>(
    ops: &mut T,
    p: &Params,
    batch: &BatchPtrs<'_, bf16>,
    c: *mut O,
) {
    let mut bufs = Buffers {
        c: TileBuf::zeroed(),
        a: [TileBuf::zeroed(), TileBuf::zeroed()],
        b: [TileBuf::zeroed(), TileBuf::zeroed()],
    };
    // SAFETY: the configuration is the one the body below is written for; every tile access
    // below goes through `block`, whose contract the loops meet.
    unsafe {
        ops.configure(&TileConfig::full());
        let mut n0 = 0;
        while n0 < p.n {
            let nt = if p.n - n0 > TN { 2 } else { 1 };
            let mut m0 = 0;
            while m0 < p.m {
                let mt = if p.m - m0 > ROWS { 2 } else { 1 };
                let b = &mut bufs;
                match (mt, nt) {
                    (1, 1) => block::<T, O, 1, 1>(ops, p, batch, c, m0, n0, b),
                    (1, _) => block::<T, O, 1, 2>(ops, p, batch, c, m0, n0, b),
                    (_, 1) => block::<T, O, 2, 1>(ops, p, batch, c, m0, n0, b),
                    _ => block::<T, O, 2, 2>(ops, p, batch, c, m0, n0, b),
                }
                m0 += mt * ROWS;
            }
            n0 += nt * TN;
        }
        ops.release();
    }
}

/// Tile-sized buffers for edges: one C tile, two A and two B tiles.
struct Buffers {
    c: TileBuf,
    a: [TileBuf; 2],
    b: [TileBuf; 2],
}

/// One block of `MT x NT` C tiles at (`m0`, `n0`), over the whole batch.
///
/// # Safety
///
/// As [`brgemm`]; the block starts inside C, and the tiles are configured as
/// [`TileConfig::full`].
#[inline(always)]
unsafe fn block<T: TileOps, O: Element, const MT: usize, const NT: usize>(
    ops: &mut T,
    p: &Params,
    batch: &BatchPtrs<'_, bf16>,
    c: *mut O,
    m0: usize,
    n0: usize,
    bufs: &mut Buffers,
) {
    let Buffers {
        c: cbuf,
        a: abuf,
        b: bbuf,
    } = bufs;
    let rows_of = |i: usize| (p.m - (m0 + ROWS * i)).min(ROWS);
    let cols_of = |j: usize| p.n.saturating_sub(n0 + TN * j).min(TN);
    let f32_out = O::DTYPE == crate::DType::F32;
    // SAFETY: each C tile lies inside C where `rows_of`/`cols_of` say; whole tiles are read
    // and written in place only when they fit entirely (f32 C, stride ldc).
    unsafe {
        for i in 0..MT {
            for j in 0..NT {
                let t = 2 * i + j;
                let at = c.add((m0 + ROWS * i) * p.ldc + n0 + TN * j);
                let whole = rows_of(i) == ROWS && cols_of(j) == TN;
                match (p.accumulate, whole && f32_out) {
                    (false, _) => ops.zero(t),
                    (true, true) => ops.load(t, at.cast(), 4 * p.ldc),
                    (true, false) => {
                        let buf = cbuf.as_f32_mut();
                        buf.fill(0.0);
                        for r in 0..rows_of(i) {
                            for col in 0..cols_of(j) {
                                buf[r * TN + col] = (*at.add(r * p.ldc + col)).to_f32();
                            }
                        }
                        ops.load(t, cbuf.0.as_ptr(), ROW_BYTES);
                    }
                }
            }
        }
    }
    for pair in 0..p.count {
        // SAFETY: pair < count, validated by the API.
        let (a, b) = unsafe { batch.get(pair) };
        let mut k0 = 0;
        while k0 < p.k {
            let kk = (p.k - k0).min(TK);
            for (i, buf) in abuf.iter_mut().enumerate().take(MT) {
                let rows = rows_of(i);
                // SAFETY: rows m0 + 16 i .. + rows and columns k0 .. k0 + kk of A_i lie
                // inside A_i; a whole tile is read in place only when all 16 x 32 do.
                unsafe {
                    let at = a.add((m0 + ROWS * i) * p.a_row + k0);
                    if rows == ROWS && kk == TK {
                        ops.load(4 + i, at.cast(), 2 * p.a_row);
                    } else {
                        let dst = buf.as_bf16_mut();
                        dst.fill(bf16::ZERO);
                        for r in 0..rows {
                            let src = std::slice::from_raw_parts(at.add(r * p.a_row), kk);
                            dst[r * TK..r * TK + kk].copy_from_slice(src);
                        }
                        ops.load(4 + i, buf.0.as_ptr(), ROW_BYTES);
                    }
                }
            }
            for (j, buf) in bbuf.iter_mut().enumerate().take(NT) {
                let cols = cols_of(j);
                // SAFETY: k pairs k0 / 2 .. and columns n0 + 16 j .. + cols of B_i lie inside
                // B_i (its extent covers ceil(k / 2) pairs of ldb columns); a whole tile is
                // read in place only when all 16 pairs are complete and all 16 columns exist.
                unsafe {
                    let bt = b.add((k0 / 2) * 2 * p.ldb + 2 * (n0 + TN * j));
                    if cols == TN && kk == TK {
                        ops.load(6 + j, bt.cast(), 4 * p.ldb);
                    } else {
                        let dst = buf.as_bf16_mut();
                        dst.fill(bf16::ZERO);
                        for pr in 0..kk.div_ceil(2) {
                            let second = 2 * pr + 1 < kk;
                            let row = bt.add(pr * 2 * p.ldb);
                            for col in 0..cols {
                                dst[pr * TK + 2 * col] = *row.add(2 * col);
                                if second {
                                    dst[pr * TK + 2 * col + 1] = *row.add(2 * col + 1);
                                }
                            }
                        }
                        ops.load(6 + j, buf.0.as_ptr(), ROW_BYTES);
                    }
                }
            }
            for i in 0..MT {
                for j in 0..NT {
                    // SAFETY: tiles configured; A, B and C tiles loaded above.
                    unsafe { ops.dot(2 * i + j, 4 + i, 6 + j) };
                }
            }
            k0 += TK;
        }
    }
    // SAFETY: as for the loads of C above; the epilogue's bias holds n values and its mask
    // is laid out as C (the API's checks).
    unsafe {
        let bias = (!p.epi.bias.is_null()).then(|| std::slice::from_raw_parts(p.epi.bias, p.n));
        let mask = (!p.epi.mask.is_null())
            .then(|| std::slice::from_raw_parts(p.epi.mask.cast::<O>(), p.c_extent));
        for i in 0..MT {
            for j in 0..NT {
                let t = 2 * i + j;
                let (r0, c0) = (m0 + ROWS * i, n0 + TN * j);
                let at = c.add(r0 * p.ldc + c0);
                let whole = rows_of(i) == ROWS && cols_of(j) == TN;
                if whole && f32_out && !p.epi.active {
                    ops.store(t, at.cast(), 4 * p.ldc);
                    continue;
                }
                ops.store(t, cbuf.0.as_mut_ptr(), ROW_BYTES);
                let buf = cbuf.as_f32_mut();
                let cols = cols_of(j);
                for (r, row) in buf.chunks_exact_mut(TN).take(rows_of(i)).enumerate() {
                    let mask_row = mask.map(|m| &m[(r0 + r) * p.ldc + c0..][..cols]);
                    let bias = bias.map(|b| &b[c0..c0 + cols]);
                    finish_row(p, &mut row[..cols], r0 + r, c0, bias, mask_row);
                    let out = std::slice::from_raw_parts_mut(at.add(r * p.ldc), cols);
                    store_row(&row[..cols], out);
                }
            }
        }
    }
}

/// The epilogue on one row of a stored C tile (columns `c0..`), step by step over the whole
/// row so each step vectorises: the same operations, in the same order, as the portable
/// definition applies to each value.
#[inline(always)]
fn finish_row<O: Element>(
    p: &Params,
    row: &mut [f32],
    r: usize,
    c0: usize,
    bias: Option<&[f32]>,
    mask: Option<&[O]>,
) {
    let e = &p.epi;
    if !e.active {
        return;
    }
    if let Some(b) = bias {
        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
    }
    if e.relu {
        row.iter_mut()
            .for_each(|v| *v = if *v <= 0.0 { 0.0 } else { *v });
    }
    if let Some(m) = mask {
        row.iter_mut()
            .zip(m)
            .for_each(|(v, y)| *v = if y.to_f32() > 0.0 { *v } else { 0.0 });
    }
    if r >= e.valid_rows {
        row.fill(0.0);
    } else if e.valid_cols < c0 + row.len() {
        row[e.valid_cols.saturating_sub(c0)..].fill(0.0);
    }
}

/// A finished row to C's type: f32 as it is, bf16 rounded to nearest even (NaN kept quiet:
/// the bits of `half::bf16::from_f32`), branch-free so it vectorises.
#[inline(always)]
fn store_row<O: Element>(row: &[f32], out: &mut [O]) {
    match O::view_mut(out) {
        crate::SliceMut::F32(o) => o.copy_from_slice(row),
        crate::SliceMut::Bf16(o) => {
            for (o, v) in o.iter_mut().zip(row) {
                let b = v.to_bits();
                let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
                let quiet = ((b >> 16) | 0x40) as u16;
                *o = bf16::from_bits(if v.is_nan() { quiet } else { rounded });
            }
        }
    }
}
