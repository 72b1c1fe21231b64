//! Which rank owns which embedding rows: a [`Plan`] of [`Shard`]s.
//!
//! [`Plan::balanced`] places whole tables greedily, largest first, each on the rank with the
//! least load so far, where a rank's load weighs its share of the table bytes and its share
//! of the expected lookups equally (bytes bound memory, lookups bound the pooling and update
//! time). A table larger than one rank's memory cap is split into contiguous row ranges,
//! each no larger than the cap, placed the same way. A plan prints as, and parses from, a
//! short text (`t0=0 t1=1 t2=0:0-500,1:500-1000`), so it can be given explicitly.
//!
//! ```
//! use dlrm_kernels::dist::{Plan, TableLoad};
//!
//! let tables = [
//!     TableLoad { rows: 1000, bytes_per_row: 256, lookups: 2048.0 },
//!     TableLoad { rows: 10, bytes_per_row: 256, lookups: 2048.0 },
//!     TableLoad { rows: 500, bytes_per_row: 256, lookups: 2048.0 },
//! ];
//! let plan = Plan::balanced(&tables, 2, None)?;
//! assert_eq!(plan.to_string(), "t0=0 t1=1 t2=1");
//! // A cap of 200 KiB per rank splits the first table (250 KiB) in two.
//! let capped = Plan::balanced(&tables, 2, Some(200 << 10))?;
//! assert_eq!(capped.shards_of_table(0).len(), 2);
//! assert_eq!(Plan::parse(&plan.to_string(), &[1000, 10, 500], 2)?, plan);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use std::fmt;
use std::ops::Range;

use crate::{Error, Result};

/// What placing one table costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableLoad {
    /// Rows.
    pub rows: usize,
    /// Bytes one row takes on its owner (weights, optimizer state, bf16 halves).
    pub bytes_per_row: usize,
    /// Expected lookups per step (pooling and update work).
    pub lookups: f64,
}

/// Rows `rows` of table `table`, owned by `rank`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shard {
    /// The table.
    pub table: usize,
    /// The owning rank.
    pub rank: usize,
    /// The table rows it holds (contiguous).
    pub rows: Range<usize>,
}

/// A placement of every row of every table on one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    ranks: usize,
    tables: usize,
    /// Sorted by table, then first row.
    shards: Vec<Shard>,
}

impl Plan {
    /// The greedy balanced placement described in the module docs.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for zero ranks, or when the tables do not fit `ranks` caps of
    /// `cap_bytes` (naming the total and the cap).
    ///
    /// ```
    /// use dlrm_kernels::dist::{Plan, TableLoad};
    /// let t = TableLoad { rows: 100, bytes_per_row: 4, lookups: 1.0 };
    /// let plan = Plan::balanced(&[t, t, t, t], 2, None)?;
    /// assert_eq!(plan.shards_of_rank(0).count(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn balanced(tables: &[TableLoad], ranks: usize, cap_bytes: Option<u64>) -> Result<Plan> {
        if ranks == 0 {
            return Err(Error::Config("a placement needs at least 1 rank".into()));
        }
        let bytes =
            |t: &TableLoad, rows: usize| (rows as u64).saturating_mul(t.bytes_per_row as u64);
        let total_bytes: u64 = tables.iter().map(|t| bytes(t, t.rows)).sum::<u64>().max(1);
        let total_lookups: f64 = tables.iter().map(|t| t.lookups).sum::<f64>().max(1.0);
        if let Some(cap) = cap_bytes
            && total_bytes > cap.saturating_mul(ranks as u64)
        {
            return Err(Error::Config(format!(
                "the tables take {} bytes, more than {ranks} ranks x the cap of {cap} bytes",
                total_bytes
            )));
        }
        // Pieces: whole tables, or row ranges no larger than the cap.
        let mut pieces: Vec<(usize, Range<usize>)> = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            let per_piece = match cap_bytes {
                Some(cap) if bytes(t, t.rows) > cap => {
                    (cap / t.bytes_per_row.max(1) as u64).max(1) as usize
                }
                _ => t.rows.max(1),
            };
            let mut start = 0;
            loop {
                let end = (start + per_piece).min(t.rows);
                pieces.push((i, start..end));
                start = end;
                if start >= t.rows {
                    break;
                }
            }
        }
        let weight = |(i, r): &(usize, Range<usize>)| {
            let t = &tables[*i];
            let frac = r.len() as f64 / t.rows.max(1) as f64;
            bytes(t, r.len()) as f64 / total_bytes as f64 + frac * t.lookups / total_lookups
        };
        // Largest first; ties by table number, so the plan is the same on every rank.
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        order.sort_by(|&a, &b| {
            weight(&pieces[b])
                .total_cmp(&weight(&pieces[a]))
                .then(pieces[a].0.cmp(&pieces[b].0))
                .then(pieces[a].1.start.cmp(&pieces[b].1.start))
        });
        let mut load = vec![0f64; ranks];
        let mut used = vec![0u64; ranks];
        let mut shards = Vec::with_capacity(pieces.len());
        for p in order {
            let (table, rows) = pieces[p].clone();
            let need = bytes(&tables[table], rows.len());
            let fits = |r: usize| cap_bytes.is_none_or(|cap| used[r] + need <= cap);
            let rank = (0..ranks)
                .filter(|&r| fits(r))
                .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "table {table} rows {}..{} ({need} bytes) fit no rank under the cap",
                        rows.start, rows.end
                    ))
                })?;
            load[rank] += weight(&pieces[p]);
            used[rank] += need;
            shards.push(Shard { table, rank, rows });
        }
        shards.sort_by_key(|s| (s.table, s.rows.start));
        Ok(Plan {
            ranks,
            tables: tables.len(),
            shards,
        })
    }

    /// Every table whole on rank 0: the single-process plan.
    ///
    /// ```
    /// let plan = dlrm_kernels::dist::Plan::single(&[10, 20]);
    /// assert_eq!(plan.to_string(), "t0=0 t1=0");
    /// ```
    pub fn single(table_rows: &[usize]) -> Plan {
        Plan {
            ranks: 1,
            tables: table_rows.len(),
            shards: table_rows
                .iter()
                .enumerate()
                .map(|(table, &rows)| Shard {
                    table,
                    rank: 0,
                    rows: 0..rows,
                })
                .collect(),
        }
    }

    /// Ranks the plan is for.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Every shard, by table, then first row.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shards of one table, in row order.
    pub fn shards_of_table(&self, table: usize) -> Vec<&Shard> {
        self.shards.iter().filter(|s| s.table == table).collect()
    }

    /// The shards one rank holds, by table.
    pub fn shards_of_rank(&self, rank: usize) -> impl Iterator<Item = &Shard> {
        self.shards.iter().filter(move |s| s.rank == rank)
    }

    /// Read a plan from its text form (see the module docs), for tables of `table_rows`
    /// rows and `ranks` ranks.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the entry that is malformed, names a table or rank that does
    /// not exist, or leaves a row of a table unowned or owned twice.
    ///
    /// ```
    /// use dlrm_kernels::dist::Plan;
    /// let p = Plan::parse("t0=1 t1=0:0-5,1:5-10", &[3, 10], 2)?;
    /// assert_eq!(p.shards_of_table(1).len(), 2);
    /// assert!(Plan::parse("t0=2", &[3], 2).is_err()); // no rank 2
    /// assert!(Plan::parse("t0=0:0-2", &[3], 1).is_err()); // row 2 unowned
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn parse(text: &str, table_rows: &[usize], ranks: usize) -> Result<Plan> {
        let bad = |entry: &str, why: String| Error::Config(format!("plan entry {entry:?}: {why}"));
        let mut shards = Vec::new();
        let mut seen = vec![false; table_rows.len()];
        for entry in text.split_whitespace() {
            let (t, owners) = entry
                .strip_prefix('t')
                .and_then(|e| e.split_once('='))
                .ok_or_else(|| bad(entry, "expected t<table>=<owners>".into()))?;
            let table: usize = t
                .parse()
                .map_err(|_| bad(entry, format!("{t:?} is not a table")))?;
            let rows = *table_rows
                .get(table)
                .ok_or_else(|| bad(entry, format!("there are {} tables", table_rows.len())))?;
            if std::mem::replace(&mut seen[table], true) {
                return Err(bad(entry, format!("table {table} placed twice")));
            }
            let mut parts = Vec::new();
            for owner in owners.split(',') {
                let (r, range) = match owner.split_once(':') {
                    Some((r, range)) => (r, Some(range)),
                    None => (owner, None),
                };
                let rank: usize = r
                    .parse()
                    .map_err(|_| bad(entry, format!("{r:?} is not a rank")))?;
                if rank >= ranks {
                    return Err(bad(entry, format!("rank {rank} outside the {ranks} ranks")));
                }
                let range = match range {
                    None => 0..rows,
                    Some(range) => {
                        let (a, b) = range
                            .split_once('-')
                            .ok_or_else(|| bad(entry, format!("{range:?} is not first-end")))?;
                        let a: usize = a.parse().map_err(|_| bad(entry, format!("{a:?}")))?;
                        let b: usize = b.parse().map_err(|_| bad(entry, format!("{b:?}")))?;
                        a..b
                    }
                };
                parts.push(Shard {
                    table,
                    rank,
                    rows: range,
                });
            }
            parts.sort_by_key(|s| s.rows.start);
            let mut next = 0;
            for p in &parts {
                if p.rows.start != next || p.rows.end <= p.rows.start && rows > 0 {
                    return Err(bad(
                        entry,
                        format!("rows must be covered once, in order: {next}.. expected"),
                    ));
                }
                next = p.rows.end;
            }
            if next != rows {
                return Err(bad(
                    entry,
                    format!("covers rows up to {next}, the table has {rows}"),
                ));
            }
            shards.extend(parts);
        }
        if let Some(t) = seen.iter().position(|s| !s) {
            return Err(Error::Config(format!("plan: table {t} has no owner")));
        }
        shards.sort_by_key(|s| (s.table, s.rows.start));
        Ok(Plan {
            ranks,
            tables: table_rows.len(),
            shards,
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in 0..self.tables {
            if t > 0 {
                f.write_str(" ")?;
            }
            let parts = self.shards_of_table(t);
            write!(f, "t{t}=")?;
            if let [whole] = parts[..]
                && whole.rows.start == 0
            {
                write!(f, "{}", whole.rank)?;
                continue;
            }
            for (i, s) in parts.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                write!(f, "{sep}{}:{}-{}", s.rank, s.rows.start, s.rows.end)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rows: usize, lookups: f64) -> TableLoad {
        TableLoad {
            rows,
            bytes_per_row: 256,
            lookups,
        }
    }

    #[test]
    fn every_row_is_owned_once_and_loads_balance() {
        let tables: Vec<TableLoad> = (0..26).map(|i| load(1000 * (i % 7 + 1), 100.0)).collect();
        for ranks in 1..=5 {
            let p = Plan::balanced(&tables, ranks, None).unwrap();
            for (t, tl) in tables.iter().enumerate() {
                let parts = p.shards_of_table(t);
                assert_eq!(parts.iter().map(|s| s.rows.len()).sum::<usize>(), tl.rows);
            }
            let per: Vec<usize> = (0..ranks)
                .map(|r| p.shards_of_rank(r).map(|s| s.rows.len()).sum())
                .collect();
            let (lo, hi) = (*per.iter().min().unwrap(), *per.iter().max().unwrap());
            assert!(hi - lo <= 7000, "{ranks} ranks: rows per rank {per:?}");
            assert_eq!(
                Plan::parse(
                    &p.to_string(),
                    &tables.iter().map(|t| t.rows).collect::<Vec<_>>(),
                    ranks
                )
                .unwrap(),
                p
            );
        }
    }

    #[test]
    fn a_table_over_the_cap_is_split_and_too_little_room_is_an_error() {
        let tables = [load(1000, 1.0), load(100, 1.0)];
        let cap = 400 * 256;
        let p = Plan::balanced(&tables, 3, Some(cap)).unwrap();
        let parts = p.shards_of_table(0);
        assert_eq!(parts.len(), 3);
        for r in 0..3 {
            let used: u64 = p.shards_of_rank(r).map(|s| s.rows.len() as u64 * 256).sum();
            assert!(used <= cap, "rank {r} holds {used} bytes");
        }
        let err = Plan::balanced(&tables, 2, Some(cap)).unwrap_err();
        assert!(err.to_string().contains("more than 2 ranks"), "{err}");
    }
}
