#!/usr/bin/env python3
"""PyTorch baseline for `cargo bench --bench mlp`: nn.Linear(1024, 1024) + ReLU with batch
2048, one training step = forward + backward + torch.optim.SGD.step(), fp32 and bf16
(bf16 weights and activations, as `torch.autocast` is not what the Rust bf16 path does:
here the whole layer is bf16, its matmuls accumulate in fp32 inside oneDNN), on 1 and 2
threads. Prints GFLOP/s (3 x 2 N C K FLOP per step) as medians.

    pip install torch
    python3 benches/compare/linear.py            # ~1 minute
    python3 benches/compare/linear.py --threads 2 --min-time 5

Not part of CI. Run it right after the Rust benchmark on an otherwise idle machine.
"""
import argparse
import statistics
import time

import torch

N, C, K = 2048, 1024, 1024


def measure(fn, min_time):
    for _ in range(3):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    p.add_argument("--min-time", type=float, default=3.0)
    a = p.parse_args()
    flops = 3 * 2 * N * C * K
    rows = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(0)
            layer = torch.nn.Linear(C, K).to(dtype)
            opt = torch.optim.SGD(layer.parameters(), lr=1e-6)
            # requires_grad: the step computes dX too (3 matmuls), as the Rust step does.
            x = torch.rand(N, C, dtype=dtype, requires_grad=True)
            dy = torch.rand(N, K, dtype=dtype) * 1e-3

            def step():
                opt.zero_grad(set_to_none=True)
                x.grad = None
                y = torch.relu(layer(x))
                y.backward(dy)
                opt.step()

            def forward():
                with torch.no_grad():
                    torch.relu(layer(x))

            t_step = measure(step, a.min_time)
            t_fwd = measure(forward, a.min_time)
            name = "fp32" if dtype == torch.float32 else "bf16"
            rows.append((name, threads, flops / t_step / 1e9, flops / 3 / t_fwd / 1e9))
            print(f"{name} {threads}t: step {t_step * 1e3:.1f} ms = {rows[-1][2]:.1f} GFLOP/s; "
                  f"forward {t_fwd * 1e3:.1f} ms = {rows[-1][3]:.1f} GFLOP/s", flush=True)
    print("\n| precision | threads | step GFLOP/s | forward GFLOP/s |\n|---|---|---|---|")
    for name, threads, s, f in rows:
        print(f"| {name} | {threads} | {s:.1f} | {f:.1f} |")
    print(f"\ntorch {torch.__version__}")


if __name__ == "__main__":
    main()
