//! The MPI communicator on several ranks: run under `mpirun` (see `.ci/run`):
//!
//! ```sh
//! cargo test --release --features mpi --test mpi --no-run
//! DLRM_TEST_RANKS=3 mpirun --allow-run-as-root --oversubscribe -np 3 target/release/deps/mpi-<hash>
//! ```
//!
//! Every rank checks that the communicator has `DLRM_TEST_RANKS` ranks, so a binary started
//! without `mpirun` (or built without the feature) cannot pass by running alone. Exits
//! non-zero on the first failure.

use dlrm_kernels::dist::{Communicator, Mpi};

fn check(comm: &Mpi) -> Result<(), String> {
    let (rank, size) = (comm.rank(), comm.size());
    let ensure = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };

    // Sum: rank r contributes r + i at i; buckets nested as the step nests them.
    let n = 10;
    let mut a: Vec<f32> = (0..n).map(|i| (rank + i) as f32).collect();
    let mut b: Vec<f32> = vec![1.0; 7];
    let inner = comm
        .all_reduce_sum_while(&mut a, |p| {
            p.poke();
            comm.all_reduce_sum_while(&mut b, |q| {
                q.poke();
                p.poke();
                42
            })
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    ensure(inner == 42, format!("nested work returned {inner}"))?;
    let ranks_sum = (size * (size - 1) / 2) as f32;
    for (i, x) in a.iter().enumerate() {
        ensure(
            *x == ranks_sum + (size * i) as f32,
            format!("sum[{i}] = {x}"),
        )?;
    }
    ensure(
        b.iter().all(|&x| x == size as f32),
        format!("second sum {b:?}"),
    )?;

    // All-to-all with uneven counts: s sends r (s + 1) * (r + 2) values 1000 s + 10 r + j.
    let count = |s: usize, r: usize| (s + 1) * (r + 2);
    let send_counts: Vec<usize> = (0..size).map(|r| count(rank, r)).collect();
    let recv_counts: Vec<usize> = (0..size).map(|s| count(s, rank)).collect();
    let send: Vec<u32> = (0..size)
        .flat_map(|r| (0..count(rank, r)).map(move |j| (1000 * rank + 10 * r + j) as u32))
        .collect();
    let mut recv = vec![0u32; recv_counts.iter().sum()];
    let worked: Result<(), String> = comm
        .all_to_all_v_while(&send, &send_counts, &mut recv, &recv_counts, |p| {
            p.poke();
            Err("work that fails still lets the exchange finish".to_string())
        })
        .map_err(|e| e.to_string())?;
    ensure(worked.is_err(), "work result lost".into())?;
    let mut at = 0;
    for s in 0..size {
        for j in 0..count(s, rank) {
            let want = (1000 * s + 10 * rank + j) as u32;
            ensure(
                recv[at] == want,
                format!("from {s}, element {j}: {} != {want}", recv[at]),
            )?;
            at += 1;
        }
    }

    // Broadcast, gather, all-gather.
    let mut v = [rank as u16; 5];
    comm.broadcast(&mut v, size - 1)
        .map_err(|e| e.to_string())?;
    ensure(v == [(size - 1) as u16; 5], format!("broadcast {v:?}"))?;
    let g = comm
        .gather_v(&vec![rank as i64; rank + 1], 0)
        .map_err(|e| e.to_string())?;
    if rank == 0 {
        let want: Vec<i64> = (0..size).flat_map(|r| vec![r as i64; r + 1]).collect();
        ensure(g == want, format!("gather {g:?}"))?;
    } else {
        ensure(g.is_empty(), "gather off the root".into())?;
    }
    let all = comm
        .all_gather_u64(rank as u64 * 3)
        .map_err(|e| e.to_string())?;
    ensure(
        all == (0..size as u64).map(|r| r * 3).collect::<Vec<_>>(),
        format!("{all:?}"),
    )?;
    comm.barrier().map_err(|e| e.to_string())
}

fn main() {
    let expected: usize = std::env::var("DLRM_TEST_RANKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let comm = Mpi::init().expect("MPI initialises");
    if expected != 0 && comm.size() != expected {
        eprintln!(
            "expected {expected} ranks, the communicator has {}",
            comm.size()
        );
        std::process::exit(2);
    }
    if expected == 0 {
        eprintln!("set DLRM_TEST_RANKS to the number of ranks mpirun starts");
        std::process::exit(2);
    }
    let rank = comm.rank();
    if let Err(e) = check(&comm) {
        eprintln!("rank {rank}: {e}");
        std::process::exit(1);
    }
    // Again in rounds of 3 elements per message, through every chunked path.
    let comm = comm.with_chunk(3);
    if let Err(e) = check(&comm) {
        eprintln!("rank {rank}, chunks of 3: {e}");
        std::process::exit(1);
    }
    if rank == 0 {
        println!(
            "mpi: {} ranks passed (whole and chunked messages)",
            comm.size()
        );
    }
}
