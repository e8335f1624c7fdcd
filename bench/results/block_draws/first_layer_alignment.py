"""Micro-bench behind ``first_layer_alignment.txt``: 8 runs' first-layer products in TF32 (forward, weight gradient,
input gradient), each as a CUDA graph of 50 products, for 55 and 49 input features with rows 55/49, 56/52 or 64
apart, and for 56 and 52 contiguous features. CUDA only.

    python bench/results/block_draws/first_layer_alignment.py
"""

from collections.abc import Callable

import torch

RUNS, HIDDEN = 8, 256
DEVICE = torch.device("cuda")


def microseconds(product: Callable[[], torch.Tensor], count: int = 50, replays: int = 10) -> float:
    """GPU time of one ``product``: a graph of ``count`` of them replayed ``replays`` times."""
    product()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        product()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(count):
            product()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (replays * count)


def rows_apart(shape: tuple[int, ...], width: int, stride: int) -> torch.Tensor:
    """Random ``shape[:-1] + (width,)`` whose rows lie ``stride`` elements apart."""
    return torch.randn(*shape[:-1], stride, device=DEVICE)[..., :width]


def times(x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor) -> tuple[float, float, float]:
    zero = torch.zeros(1, device=DEVICE)
    return (microseconds(lambda: torch.baddbmm(zero, x, w.transpose(1, 2))),
            microseconds(lambda: torch.bmm(dy.transpose(1, 2), x)), microseconds(lambda: torch.bmm(dy, w)))  # fmt: skip


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    for width, rows in ((55, 256), (49, 512)):
        for stride in (width, (width + 3) // 4 * 4, 64):
            x, w = rows_apart((RUNS, rows, width), width, stride), rows_apart((RUNS, HIDDEN, width), width, stride)
            fwd, dw, dx = times(x, w, torch.randn(RUNS, rows, HIDDEN, device=DEVICE))
            print(f"width {width} rows {rows} ld {stride}: fwd {fwd:.1f} us  dW {dw:.1f} us  dX {dx:.1f} us")
    for width, rows in ((56, 256), (52, 512)):
        x, w = torch.randn(RUNS, rows, width, device=DEVICE), torch.randn(RUNS, HIDDEN, width, device=DEVICE)
        fwd, dw, dx = times(x, w, torch.randn(RUNS, rows, HIDDEN, device=DEVICE))
        print(f"contiguous width {width} rows {rows}: fwd {fwd:.1f}  dW {dw:.1f}  dX {dx:.1f}")


if __name__ == "__main__":
    main()
