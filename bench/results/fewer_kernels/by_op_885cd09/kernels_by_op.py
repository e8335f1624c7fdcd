"""Where 8 stacked runs' extra kernel time goes: the step's kernels attributed to the ATen ops (with input shapes) or
compiled kernels that launched them, one run and 8, batch 256, TF32, maths compiled (run from the repository root:
``python bench/results/fewer_kernels/by_op_885cd09/kernels_by_op.py OUT_DIR``; CUDA only)."""

import sys

sys.path.insert(0, ".")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench.learner_kernels import stacked_runs  # noqa: E402
from bench.learner_speed import filled_replay, run_replays  # noqa: E402
from learner.graph import compiled_math  # noqa: E402

dev = torch.device("cuda")
replay = filled_replay(dev, 100_000)
out = sys.argv[1]
for k in (1, 8):
    replays = run_replays(replay, k, joined=True)
    stack = stacked_runs(k, 256, "high", dev)
    stack.math = compiled_math()
    stack.allocate_block(50)
    stack.begin_block(replays, 3)
    for _ in range(3):
        stack.sampled_step(replays)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True, with_stack=True) as prof:
        stack.begin_block(replays, 20)
        for _ in range(20):
            stack.sampled_step(replays)
        torch.cuda.synchronize()
    with open(f"{out}/shapes_k{k}.txt", "w") as f:
        f.write(prof.key_averages(group_by_input_shape=True).table(sort_by="self_device_time_total", row_limit=80,
                max_name_column_width=50, max_shapes_column_width=110))
    with open(f"{out}/stacks_k{k}.txt", "w") as f:
        f.write(prof.key_averages(group_by_stack_n=8).table(sort_by="self_device_time_total", row_limit=60,
                max_name_column_width=50, max_src_column_width=200))
    rows = []
    for e in prof.events():
        try:
            if e.device_type == torch.autograd.DeviceType.CPU and getattr(e, "kernels", None):
                for kern in e.kernels:
                    rows.append((e.name, str(e.input_shapes)[:150], kern.name[:90], kern.duration))
            elif e.device_type == torch.autograd.DeviceType.CUDA:
                p = e.cpu_parent
                chain = []
                while p is not None and len(chain) < 4:
                    chain.append(f"{p.name}{str(p.input_shapes)[:100]}")
                    p = p.cpu_parent
                rows.append((" <- ".join(chain)[:400], "", e.name[:90], e.device_time))
        except Exception as exc:  # noqa: BLE001
            rows.append(("error", repr(exc), "", 0.0))
    with open(f"{out}/kernels_k{k}.txt", "w") as f:
        for r in rows:
            f.write(f"{r[3]:7.2f} | {r[2]} | {r[0]} | {r[1]}\n")
    print(k, "done", flush=True)
