#!/usr/bin/env python3
"""PyTorch baseline for `cargo bench --bench dlrm_step` and the trainer's `--preset small`:
the DLRM reference's model (nn.Linear MLPs with ReLU, nn.EmbeddingBag(mode="sum",
sparse=True) tables, dot interaction, sigmoid + BCE, torch.optim.SGD) in the `small`
configuration: 8 tables x 1M rows, dim 64, bottom 512-512-64, top 1024-1024-1024-1, batch
2048, bags of 1..100 random lookups (the reference's random data), on 2 threads.
Prints ms per training step (median), data generation excluded.

    pip install torch numpy
    python3 benches/compare/dlrm_small.py                 # fp32, 2 threads, ~2 minutes
    python3 benches/compare/dlrm_small.py --bf16          # weights and activations in bf16

Not part of CI. Needs about 6 GiB of memory (tables and their sparse gradients).
"""
import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn as nn


def mlp(sizes, sigmoid_last, dtype):
    layers = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        std = np.sqrt(2.0 / (sizes[i] + sizes[i + 1]))
        lin.weight.data.normal_(0.0, std)
        lin.bias.data.normal_(0.0, np.sqrt(1.0 / sizes[i + 1]))
        layers.append(lin)
        last = i == len(sizes) - 2
        layers.append(nn.Sigmoid() if (last and sigmoid_last) else nn.ReLU())
    return nn.Sequential(*layers).to(dtype)


class Dlrm(nn.Module):
    def __init__(self, rows, dim, bot, top, dtype):
        super().__init__()
        self.bot = mlp(bot, False, dtype)
        f = len(rows) + 1
        self.top = mlp([dim + f * (f - 1) // 2] + top, True, dtype)
        self.emb = nn.ModuleList()
        for r in rows:
            e = nn.EmbeddingBag(r, dim, mode="sum", sparse=True)
            bound = np.sqrt(1.0 / r)
            e.weight.data.uniform_(-bound, bound)
            self.emb.append(e.to(dtype))
        li, lj = zip(*[(i, j) for i in range(f) for j in range(i)])
        self.li, self.lj = torch.tensor(li), torch.tensor(lj)

    def forward(self, dense, indices, offsets):
        x = self.bot(dense)
        ly = [e(i, o) for e, i, o in zip(self.emb, indices, offsets)]
        t = torch.cat([x] + ly, dim=1).view(x.shape[0], -1, x.shape[1])
        z = torch.bmm(t, t.transpose(1, 2))[:, self.li, self.lj]
        return self.top(torch.cat([x, z], dim=1))


def random_batch(rng, rows, batch, k, dense_features, dtype):
    dense = torch.tensor(rng.random((batch, dense_features)), dtype=dtype)
    indices, offsets = [], []
    for r in rows:
        idx, off, o = [], [], 0
        for _ in range(batch):
            n = int(np.round(max(1.0, rng.random() * min(r, k))))
            g = np.unique(np.round(rng.random(n) * (r - 1)).astype(np.int64))
            off.append(o)
            idx.append(g)
            o += len(g)
        indices.append(torch.tensor(np.concatenate(idx)))
        offsets.append(torch.tensor(off))
    target = torch.tensor(np.round(rng.random((batch, 1))), dtype=dtype)
    return dense, indices, offsets, target


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batches", type=int, default=4)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if a.bf16 else torch.float32
    rows, dim, bot, top, batch = [1_000_000] * 8, 64, [512, 512, 64], [1024, 1024, 1024, 1], 2048
    model = Dlrm(rows, dim, bot, top, dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.BCELoss()
    rng = np.random.default_rng(7)
    batches = [random_batch(rng, rows, batch, 100, bot[0], dtype) for _ in range(a.batches)]
    lookups = np.mean([sum(len(i) for i in b[1]) for b in batches])
    times = []
    for s in range(a.steps + 2):
        dense, idx, off, target = batches[s % len(batches)]
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(dense, idx, off), target)
        loss.backward()
        opt.step()
        if s >= 2:
            times.append(time.perf_counter() - t)
    name = "bf16" if a.bf16 else "fp32"
    print(f"PyTorch {torch.__version__} DLRM small, {name}, {a.threads} threads: "
          f"{statistics.median(times) * 1e3:.1f} ms/step (median of {len(times)}), "
          f"{lookups:.0f} lookups per step")


if __name__ == "__main__":
    main()
