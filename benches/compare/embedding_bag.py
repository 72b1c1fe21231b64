#!/usr/bin/env python3
"""PyTorch baseline for `cargo bench --bench embedding` (not part of CI).

Measures `nn.EmbeddingBag(mode="sum", sparse=True)` on the CPU with the same shapes as the Rust
benchmark: tables 1M x 64 and 8M x 64 (fp32 and bf16) and 1M x 128 fp32, batch 2048, 100
uniformly random lookups per bag (int64 indices, B offsets), 8 pre-generated index batches
rotated so rows are not cache-resident, with 1 and 2 threads (`torch.set_num_threads`).

For each it prints M lookups/s (median over timed iterations) for
  * forward:               `emb(indices, offsets)` under `torch.no_grad()`;
  * forward+backward+step: `emb(indices, offsets).backward(grad); SGD.step(); zero_grad()`
                           (torch.optim.SGD, lr 0.01, on the sparse gradient);
  * backward+step:         derived, lookups / (t_fwd_bwd_step - t_fwd), the figure to set
                           beside the Rust fused backward + update.

How to run (CPU only; a CUDA build of torch works too, it stays on the CPU):

    pip install torch numpy
    python3 benches/compare/embedding_bag.py            # all tables, ~3-5 minutes
    python3 benches/compare/embedding_bag.py --quick    # 1M x 64 only
    python3 benches/compare/embedding_bag.py --tables f32_1Mx64,bf16_1Mx64 --threads 2

Run it on an otherwise idle machine, right after (or before) the Rust benchmark, and compare
medians from the same machine. The 8M x 64 tables take 2 GiB (fp32) each, one at a time.
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn

BATCH = 2048
BAG = 100
LOOKUPS = BATCH * BAG
ROTATE = 8

TABLES = {
    "f32_1Mx64": (1 << 20, 64, torch.float32),
    "bf16_1Mx64": (1 << 20, 64, torch.bfloat16),
    "f32_1Mx128": (1 << 20, 128, torch.float32),
    "f32_8Mx64": (8 << 20, 64, torch.float32),
    "bf16_8Mx64": (8 << 20, 64, torch.bfloat16),
}


def timed(fn, batches, min_time, min_iters=10):
    """Median seconds per call of fn(indices, offsets), rotating through the batches."""
    for k in range(2):  # warm-up
        fn(*batches[k % ROTATE])
    times = []
    start = time.perf_counter()
    k = 0
    while len(times) < min_iters or time.perf_counter() - start < min_time:
        idx, off = batches[k % ROTATE]
        t0 = time.perf_counter()
        fn(idx, off)
        times.append(time.perf_counter() - t0)
        k += 1
    return statistics.median(times)


def bench_table(name, rows, dim, dtype, threads, min_time):
    torch.manual_seed(0)
    emb = nn.EmbeddingBag(rows, dim, mode="sum", sparse=True, dtype=dtype)
    bound = (1.0 / rows) ** 0.5
    with torch.no_grad():
        emb.weight.uniform_(-bound, bound)
    opt = torch.optim.SGD(emb.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(7)
    batches = [
        (
            torch.randint(0, rows, (LOOKUPS,), dtype=torch.int64, generator=gen),
            torch.arange(0, LOOKUPS, BAG, dtype=torch.int64),
        )
        for _ in range(ROTATE)
    ]
    grad = (torch.rand(BATCH, dim, generator=gen) * 2e-3 - 1e-3).to(dtype)

    def forward(idx, off):
        with torch.no_grad():
            emb(idx, off)

    def step(idx, off):
        out = emb(idx, off)
        out.backward(grad)
        opt.step()
        opt.zero_grad(set_to_none=True)

    results = []
    for t in threads:
        torch.set_num_threads(t)
        fwd = timed(forward, batches, min_time)
        full = timed(step, batches, min_time)
        bwd_rate = LOOKUPS / (full - fwd) / 1e6 if full > fwd else float("nan")
        row = (name, t, LOOKUPS / fwd / 1e6, LOOKUPS / full / 1e6, bwd_rate)
        print(
            f"{name:<12} {t}t  forward {row[2]:8.2f} M lookups/s   "
            f"fwd+bwd+step {row[3]:7.2f} M lookups/s   bwd+step (derived) {row[4]:7.2f} M lookups/s",
            flush=True,
        )
        results.append(row)
    del emb, opt
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", default=",".join(TABLES), help="comma-separated subset of " + ", ".join(TABLES))
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--quick", action="store_true", help="1M x 64 fp32 and bf16 only")
    args = ap.parse_args()
    names = ["f32_1Mx64", "bf16_1Mx64"] if args.quick else args.tables.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available, "
          f"batch {BATCH} x {BAG} lookups, sum pooling, SGD")
    rows = []
    for name in names:
        r, d, dt = TABLES[name]
        rows += bench_table(name, r, d, dt, threads, args.min_time)
    print("\n| table | threads | forward M lookups/s | fwd+bwd+SGD M lookups/s | bwd+SGD (derived) M lookups/s |")
    print("|---|---|---|---|---|")
    for name, t, f, s, b in rows:
        print(f"| {name} | {t} | {f:.1f} | {s:.2f} | {b:.2f} |")


if __name__ == "__main__":
    main()
