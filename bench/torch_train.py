#!/usr/bin/env python3
"""PyTorch peer for `make bench`: trains LeNet-300-100 on Fashion-MNIST with
deep weight factorization exactly as dwf does (factors as Parameters,
collapsed every step, L2 on the factors, plain SGD with cosine schedule,
batch 128), and prints samples/s for each depth.

Run with OPENBLAS_NUM_THREADS=1 (set by bench/run.sh): torch's own threads
(torch.set_num_threads) and OpenBLAS's would otherwise fight.
"""
import gzip
import json
import sys
import time

import numpy as np
import torch

FM = "/usr/share/datasets/fashion-mnist"


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class FactorLinear(torch.nn.Module):
    def __init__(self, n_in, n_out, depth, gen):
        super().__init__()
        sigma = (2.0 / n_in) ** 0.5
        s = sigma ** (1.0 / depth)
        self.factors = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(n_out, n_in, generator=gen) * s) for _ in range(depth)])
        self.bias = torch.nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        w = self.factors[0]
        for f in self.factors[1:]:
            w = w * f
        return torch.nn.functional.linear(x, w, self.bias)


def run(depth, x, y, epochs, lam, threads):
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(1)
    layers = [FactorLinear(784, 300, depth, gen), FactorLinear(300, 100, depth, gen),
              FactorLinear(100, 10, depth, gen)]
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    factors = [f for l in layers for f in l.factors]
    biases = [l.bias for l in layers]
    opt = torch.optim.SGD([{"params": factors, "weight_decay": 2 * lam / depth},
                           {"params": biases, "weight_decay": 0.0}], lr=0.2)
    n = x.shape[0]
    steps = epochs * ((n + 127) // 128)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    lossf = torch.nn.CrossEntropyLoss()
    seen = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, 128):
            idx_ = perm[s:s + 128]
            xb, yb = x[idx_], y[idx_]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            seen += xb.shape[0]
    return seen / (time.perf_counter() - t0)


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    x = torch.from_numpy(idx(f"{FM}/train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(idx(f"{FM}/train-labels-idx1-ubyte.gz").astype(np.int64))
    out = {"torch": torch.__version__, "threads": threads, "samples_per_sec": {}}
    run(1, x[:4096], y[:4096], 1, 1e-3, threads)  # warm-up
    for depth in (1, 2, 3, 4):
        out["samples_per_sec"][str(depth)] = run(depth, x, y, epochs, 1e-3, threads)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
