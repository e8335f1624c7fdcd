"""Micro-bench: an update's network passes (critic fwd+bwd, actor fwd+bwd) at K=1 and K=8, TF32, as CUDA graphs:
the current path (eager cuBLAS products + compiled bias_relu) against whole networks compiled (default /
max-autotune). Run from the repository root (CUDA only); its ``zip``s given ``strict=True`` after the run."""

import sys
import time

import torch

sys.path.insert(0, ".")
from learner.networks import bias_relu_fused, stacked_mlp, twin_q  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = True
dev = torch.device("cuda")
B, IN, H, A = 256, 56, 256, 6
MODE = sys.argv[1] if len(sys.argv) > 1 else "all"


def params(k):
    g = torch.Generator(device=dev).manual_seed(0)
    def r(*s):
        return (torch.randn(s, device=dev, generator=g) * 0.05).requires_grad_()
    critic = [r(k, 2, H, IN), r(k, 2, H), r(k, 2, H, H), r(k, 2, H), r(k, 2, 1, H), r(k, 2, 1)]
    actor = [r(k, H, IN), r(k, H), r(k, H, H), r(k, H), r(k, 2 * A, H), r(k, 2 * A)]
    return critic, actor


def plain_twin(xa, ws, bs):
    k = xa.shape[0]
    h = xa.unsqueeze(1).expand(k, 2, *xa.shape[1:]).flatten(0, 1)  # [2K, B, in]
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        h = torch.baddbmm(b.flatten(0, 1).unsqueeze(1), h, w.flatten(0, 1).transpose(1, 2))
        if i < len(ws) - 1:
            h = torch.relu(h)
    return h.view(k, 2, -1)


def plain_mlp(x, ws, bs):
    h = x
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if i < len(ws) - 1:
            h = torch.relu(h)
    return h


relu_c = torch.compile(bias_relu_fused, dynamic=False, fullgraph=True)


def current(xa, xs, critic, actor):
    q = twin_q(xa, critic[0::2], critic[1::2], None, relu_c)
    out = stacked_mlp(xs, actor[0::2], actor[1::2], None, relu_c)
    return q.square().sum() + out.square().sum()


def plain(xa, xs, critic, actor):
    return plain_twin(xa, critic[0::2], critic[1::2]).square().sum() + plain_mlp(xs, actor[0::2], actor[1::2]).square().sum()


def time_graph(fn, k):
    critic, actor = params(k)
    xa = torch.randn(k, B, IN, device=dev)
    xs = torch.randn(k, 2 * B, IN, device=dev)
    ps = critic + actor

    def step():
        loss = fn(xa, xs, critic, actor)
        return torch.autograd.grad(loss, ps)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    n = 20
    with torch.cuda.graph(g):
        for _ in range(n):
            step()
    for _ in range(5):
        g.replay()
    torch.cuda.synchronize()
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            g.replay()
        torch.cuda.synchronize()
        best.append((time.perf_counter() - t) / (20 * n) * 1e6)
    best.sort()
    return best[2]


rows = {}
t0 = time.time()
variants = {
    "current": current,
    "compiled": torch.compile(plain, dynamic=False, fullgraph=True),
    "autotune": torch.compile(plain, dynamic=False, fullgraph=True, mode="max-autotune-no-cudagraphs"),
}
for name, fn in variants.items():
    for k in (1, 8):
        t = time.time()
        rows[name, k] = time_graph(fn, k)
        print(f"{name:9s} K={k}: {rows[name, k]:7.1f} us per pass pair  (built+timed in {time.time() - t:.0f}s)", flush=True)
for name in variants:
    print(f"{name:9s} K=1 {rows[name, 1]:7.1f}  K=8 {rows[name, 8]:7.1f}  8x one run / K=8: {8 * rows[name, 1] / rows[name, 8]:.2f}")
print(f"total {time.time() - t0:.0f}s")
