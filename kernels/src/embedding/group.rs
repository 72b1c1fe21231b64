//! Grouping the lookups of one block of rows by row, for
//! [`BagKernel::apply_grouped`](super::BagKernel::apply_grouped).
//!
//! One pass over the lookups, without a sort, branches or (once the buffers have grown)
//! allocation, links each lookup to the next lookup of the same row: a bitmap of the rows
//! seen so far tells a row's first lookup (a new head) from a repeat, which is linked from the
//! row's last lookup, kept in a row-indexed array. The lookups themselves are not moved. The
//! same pass checks every lookup (its row inside the block, its bag's gradient row inside the
//! gradient), so the update needs no second look at them.
//!
//! Rows are visited in the order of their first lookup rather than in ascending order:
//! ascending rows a few rows apart look like a stream to the hardware prefetchers, which then
//! also fetch the rows in between (the measurement: BENCHMARKS.md, "Measurements behind
//! choices in the code").

use super::Lookup;
use crate::abi::Chains;

/// Reusable buffers for grouping lookups by row in [`BagKernel::apply_grouped`]. They grow to
/// the largest block (a bit and a `u32` per row) and lookup count (two `u32` per lookup) seen
/// and are never shrunk: keep one per thread or task, and blocks of a few tens of thousands
/// of rows keep them in L2.
///
/// [`BagKernel::apply_grouped`]: super::BagKernel::apply_grouped
///
/// ```
/// use dlrm_microkernels::embedding::{
///     BagKernel, BagKernelDesc, GradRows, GroupBuffers, Lookup, RowUpdate, RowsMut,
/// };
/// let k = BagKernel::new(BagKernelDesc::new(1))?;
/// let mut buffers = GroupBuffers::default(); // empty until first used, then reused
/// let mut rows = [1.0f32, 1.0];
/// for step in 0..3 {
///     let lookups = [Lookup { row: step % 2, bag: 0, scale: 1.0 }];
///     let grad = GradRows { data: &[0.5], stride: 1 };
///     let update = RowUpdate::Sgd { lr: 1.0 };
///     k.apply_grouped(RowsMut::F32(&mut rows), 0, &lookups, grad, update, &mut buffers)?;
/// }
/// assert_eq!(rows, [0.0, 0.5]);
/// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct GroupBuffers {
    /// Bit `r` is set once row `first_row + r` has been seen in the current block.
    seen: Vec<u64>,
    /// Where row `first_row + r` was last seen, a lookup number; meaningful only where `seen`
    /// has the row's bit (so it is never cleared).
    last: Vec<u32>,
    /// For lookup `i`: the next lookup of the same row, or [`Chains::END`]. One extra entry
    /// at the end takes the links from first lookups, which have no predecessor.
    next: Vec<u32>,
    /// The first lookup of each row, in position order.
    heads: Vec<u32>,
}

impl GroupBuffers {
    /// Chain `lookups` (fewer than `u32::MAX`) by row, for a block of `rows` rows starting at
    /// `first_row`; `None` when some lookup's row is outside the block or its bag is above
    /// `max_bag` (`None`: no bag is allowed).
    pub(crate) fn chain(
        &mut self,
        lookups: &[Lookup],
        first_row: usize,
        rows: usize,
        max_bag: Option<usize>,
    ) -> Option<Chains<'_>> {
        let m = lookups.len();
        debug_assert!(
            m < u32::MAX as usize,
            "lookup numbers fit below Chains::END"
        );
        if m == 0 {
            return Some(Chains {
                heads: &[],
                next: &[],
            });
        }
        let max_bag = max_bag?;
        if rows == 0 {
            return None;
        }
        let GroupBuffers {
            seen,
            last,
            next,
            heads,
        } = self;
        seen.clear();
        seen.resize(rows.div_ceil(64), 0);
        if last.len() < rows {
            last.resize(rows, 0);
        }
        next.clear();
        next.resize(m + 1, Chains::END);
        if heads.len() < m {
            heads.resize(m, 0);
        }
        // Plain slices, so the loop keeps its pointers in registers.
        let (seen, last, next, heads) = (
            &mut seen[..],
            &mut last[..rows],
            &mut next[..],
            &mut heads[..m],
        );
        let mut bad = false;
        let mut nheads = 0;
        for (i, l) in lookups.iter().enumerate() {
            let r = (l.row as usize).wrapping_sub(first_row);
            let inside = r < rows;
            bad |= !inside | (l.bag as usize > max_bag);
            // A bad lookup is chained as row 0 (the result is dropped below), which keeps
            // the loop free of branches.
            let r = if inside { r } else { 0 };
            let (word, bit) = (r / 64, 1u64 << (r % 64));
            let before = seen[word];
            seen[word] = before | bit;
            let again = before & bit != 0;
            // A repeat links from the row's last lookup, a first lookup from the spare entry
            // `m` (selected with a mask: which one it is is unpredictable).
            let mask = usize::from(again).wrapping_neg();
            let prev = (last[r] as usize & mask) | (m & !mask);
            next[prev] = i as u32;
            last[r] = i as u32;
            heads[nheads] = i as u32;
            nheads += usize::from(!again);
        }
        (!bad).then_some(Chains {
            heads: &heads[..nheads],
            next: &next[..m],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chains as lists of lookup numbers, in visiting order.
    fn walk(c: &Chains<'_>) -> Vec<Vec<usize>> {
        c.heads
            .iter()
            .map(|&h| {
                let mut chain = vec![h as usize];
                while c.next[*chain.last().unwrap()] != Chains::END {
                    chain.push(c.next[*chain.last().unwrap()] as usize);
                }
                chain
            })
            .collect()
    }

    #[test]
    fn chains_follow_first_occurrence_and_position_order_with_reused_buffers() {
        let mut state = 11u64;
        let mut below = |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        };
        let mut buffers = GroupBuffers::default();
        // Blocks of different sizes and places through the same buffers: nothing stale may
        // leak from one into the next.
        for (first_row, rows, m) in [(64, 100, 300), (0, 37, 5), (1000, 4096, 2000), (7, 1, 4)] {
            let lookups: Vec<Lookup> = (0..m)
                .map(|i| Lookup {
                    row: (first_row + below(rows)) as u32,
                    bag: i as u32,
                    scale: 1.0,
                })
                .collect();
            let chains = buffers
                .chain(&lookups, first_row, rows, Some(m))
                .expect("all lookups valid");
            assert_eq!(chains.next.len(), m);
            let got = walk(&chains);
            // Expected: rows by first occurrence, each with its lookups in position order.
            let mut want: Vec<Vec<usize>> = Vec::new();
            for (i, l) in lookups.iter().enumerate() {
                match want.iter_mut().find(|c| lookups[c[0]].row == l.row) {
                    Some(c) => c.push(i),
                    None => want.push(vec![i]),
                }
            }
            assert_eq!(got, want, "block at {first_row}, {rows} rows, {m} lookups");
        }
        let none = buffers.chain(&[], 0, 10, None).expect("nothing to check");
        assert!(none.heads.is_empty() && none.next.is_empty());
    }

    #[test]
    fn any_bad_lookup_fails_the_pass() {
        let ok = Lookup {
            row: 5,
            bag: 2,
            scale: 1.0,
        };
        let mut buffers = GroupBuffers::default();
        let mut check = |lookups: &[Lookup], max_bag: Option<usize>| {
            buffers.chain(lookups, 5, 4, max_bag).is_some()
        };
        assert!(check(&[ok, Lookup { row: 8, ..ok }], Some(2)));
        for bad in [
            Lookup { row: 4, ..ok }, // below the block
            Lookup { row: 9, ..ok }, // past it
            Lookup {
                row: u32::MAX,
                ..ok
            },
            Lookup { bag: 3, ..ok }, // gradient row past the end
        ] {
            assert!(!check(&[ok, bad, ok], Some(2)), "{bad:?}");
        }
        assert!(!check(&[ok], None), "no gradient row fits");
        assert!(check(&[ok], Some(usize::MAX)));
        assert!(buffers.chain(&[ok], 5, 0, Some(2)).is_none(), "empty block");
    }
}
