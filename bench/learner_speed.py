"""Learner update rate: SAC updates per second on one GPU, dmsac against a plain eager loop, side by side.

    python bench/learner_speed.py [--batches 256 1024 4096] [--seconds 1.0] [--repeats 5] [--out bench/results]

Every variant does the same work per update: twin 256x256 critics, a 256x256
tanh-Gaussian policy, learned temperature, global-norm clipping at 5, Polyak
targets, a batch sampled on the GPU from a replay of 1M transitions
(observation 49 = 17 + 32 context, action 6). Variants:

- ``eager_loop``: a plain eager PyTorch SAC loop written here, CleanRL-shaped
  (separate critic modules, ``torch.distributions.Normal``, foreach Adam,
  per-parameter Polyak copy), with no ``.item()`` anywhere: the 1x reference;
- ``dmsac_eager``: ``learner.sac.SAC.update_block`` run eagerly (``learner.fast_path: off``; one host read per block);
- ``graphed``: the same SAC's block with each update one CUDA-graph replay (``learner.graph.GraphedBlocks``;
  sampling inside the graph), guard on (``fast_path: graph``);
- ``graphed_noguard``: the same with the guard flags off (guard overhead = its rate over ``graphed``);
- ``graphed_compiled``: ``graphed`` with the step's maths through ``torch.compile`` before capture (``fast_path: auto``);
- ``compiled_high``, ``compiled_bf16``: ``graphed_compiled`` with ``learner.matmul_precision: high`` (TF32) or
  ``bf16`` (the forward products in bfloat16, the weights cast once per pass); for large batches (``--batches 4096 16384``).
- ``parallel_4``, ``parallel_8``: ``train.parallel_runs`` — 4 or 8 independent SACs (seeds 0..K-1, each with its
  own replay sampler over the same stored rows) in ``graphed_compiled`` form, stacked (``learner.stack.RunStack``:
  one step of batched products for all of them, as ``learner.parallel.JointTrainer`` joins runs of one shape, their
  replays' rows copied into one tensor as it joins them), one graph replay per update of all; their rate counts every
  run's updates (floor: 8 runs >= 5x ``graphed_compiled``);
- ``branches_8``: the 8 runs as 8 branches of one graph (a step each, side by side on the GPU): how runs of
  different shapes train together, and how ``parallel_8`` ran before the stack;
- ``parallel_8_high``, ``branches_8_high``, ``parallel_8_bf16``: the same in TF32 or bf16, measured against
  ``compiled_high`` / ``compiled_bf16`` (eight runs' products are eight times the arithmetic: in fp32 SIMT they, not
  the launches, set the pace).

Before the single SAC (December 2026) the graphed variants ran a second SAC class
(``GraphedSAC``) of the same maths; ``graphed_batch`` (a graph per given batch,
sampling outside it) is gone with it: the learner only ever ran the block graph.

All variants of one batch size are built first, then timed round-robin
(``--repeats`` rounds of about ``--seconds`` each), so drift hits all alike;
the table gives the median rate and the min..max over rounds. Blocks are 50
updates and every timed window ends with a device synchronize.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command_line, fill_random_replay, machine, machine_line, write_report  # noqa: E402
from learner.config import LearnerConfig  # noqa: E402
from learner.graph import GraphedBlocks  # noqa: E402
from learner.replay import ReplayBuffer  # noqa: E402
from learner.sac import SAC  # noqa: E402
from learner.stack import RunStack  # noqa: E402

OBS, CONTEXT, ACTION, HIDDEN, BLOCK = 17, 32, 6, 256, 50
TARGET_FLOOR, TARGET_AIM, GUARD_LIMIT = 15.0, 25.0, 5.0


# -- (a) the plain eager loop -----------------------------------------------------------------------
class SoftQ(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (
            nn.Linear(OBS + CONTEXT + ACTION, HIDDEN),
            nn.Linear(HIDDEN, HIDDEN),
            nn.Linear(HIDDEN, 1),
        )

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc2(torch.relu(self.fc1(torch.cat([x, a], 1)))))
        return self.fc3(h)


class PlainActor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(OBS + CONTEXT, HIDDEN), nn.Linear(HIDDEN, HIDDEN)
        self.fc_mean, self.fc_logstd = nn.Linear(HIDDEN, ACTION), nn.Linear(HIDDEN, ACTION)

    def get_action(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        mean, log_std = self.fc_mean(h), torch.clamp(self.fc_logstd(h), -5, 2)
        normal = torch.distributions.Normal(mean, log_std.exp())
        x_t = normal.rsample()
        y_t = torch.tanh(x_t)
        log_prob = normal.log_prob(x_t) - torch.log(1 - y_t.pow(2) + 1e-6)
        return y_t, log_prob.sum(1, keepdim=True)


class EagerLoop:
    """CleanRL-shaped SAC (policy and target updated every step, so the same work as dmsac per update)."""

    def __init__(self, device: torch.device, batch: int, capacity: int, gamma: float = 0.99, tau: float = 0.005):
        self.device, self.batch, self.gamma, self.tau = device, batch, gamma, tau
        self.actor = PlainActor().to(device)
        self.qf1, self.qf2 = SoftQ().to(device), SoftQ().to(device)
        self.qf1_target, self.qf2_target = SoftQ().to(device), SoftQ().to(device)
        self.qf1_target.load_state_dict(self.qf1.state_dict())
        self.qf2_target.load_state_dict(self.qf2.state_dict())
        self.q_params = list(self.qf1.parameters()) + list(self.qf2.parameters())
        self.target_params = list(self.qf1_target.parameters()) + list(self.qf2_target.parameters())
        self.q_optimizer = torch.optim.Adam(self.q_params, lr=3e-4)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.target_entropy = -float(ACTION)
        self.log_alpha = torch.zeros(1, requires_grad=True, device=device)
        self.a_optimizer = torch.optim.Adam([self.log_alpha], lr=3e-4)
        g = torch.Generator(device=device).manual_seed(0)
        self.obs = torch.randn(capacity, OBS + CONTEXT, device=device, generator=g)
        self.next_obs = torch.randn(capacity, OBS + CONTEXT, device=device, generator=g)
        self.actions = torch.rand(capacity, ACTION, device=device, generator=g) * 2 - 1
        self.rewards = torch.randn(capacity, device=device, generator=g)
        self.dones = (torch.rand(capacity, device=device, generator=g) < 0.01).float()
        self.capacity = capacity

    def step(self) -> None:
        idx = torch.randint(0, self.capacity, (self.batch,), device=self.device)
        obs, act, next_obs = self.obs[idx], self.actions[idx], self.next_obs[idx]
        rew, done = self.rewards[idx], self.dones[idx]
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_a, next_logp = self.actor.get_action(next_obs)
            min_next = (
                torch.min(self.qf1_target(next_obs, next_a), self.qf2_target(next_obs, next_a)) - alpha * next_logp
            )
            next_q = rew + (1 - done) * self.gamma * min_next.view(-1)
        qf1_a, qf2_a = self.qf1(obs, act).view(-1), self.qf2(obs, act).view(-1)
        qf_loss = nn.functional.mse_loss(qf1_a, next_q) + nn.functional.mse_loss(qf2_a, next_q)
        self.q_optimizer.zero_grad()
        qf_loss.backward()
        nn.utils.clip_grad_norm_(self.q_params, 5.0)
        self.q_optimizer.step()
        pi, log_pi = self.actor.get_action(obs)
        min_q_pi = torch.min(self.qf1(obs, pi), self.qf2(obs, pi))
        actor_loss = (alpha * log_pi - min_q_pi).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        nn.utils.clip_grad_norm_(self.actor.parameters(), 5.0)
        self.actor_optimizer.step()
        alpha_loss = (-self.log_alpha.exp() * (log_pi.detach() + self.target_entropy)).mean()
        self.a_optimizer.zero_grad()
        alpha_loss.backward()
        self.a_optimizer.step()
        with torch.no_grad():
            for param, target in zip(self.q_params, self.target_params, strict=True):
                target.data.copy_(self.tau * param.data + (1 - self.tau) * target.data)

    def block(self) -> None:
        for _ in range(BLOCK):
            self.step()


# -- (b)..(f) dmsac ---------------------------------------------------------------------------------
def learner_config(batch: int, precision: str = "highest") -> LearnerConfig:
    return LearnerConfig(
        hidden_sizes=(HIDDEN, HIDDEN), lr=3e-4, gamma=0.99, batch_size=batch, reward_scale=1.0, block_updates=BLOCK,
        matmul_precision=precision,
    )


def filled_replay(device: torch.device, capacity: int) -> ReplayBuffer:
    replay = ReplayBuffer(capacity, OBS, CONTEXT, ACTION, device, seed=3)
    fill_random_replay(replay, capacity)
    return replay


def sac_block(blocks: SAC | GraphedBlocks, replay: ReplayBuffer) -> None:
    """``Learner.update_block``: a block of updates, one host read."""
    vector, _ = blocks.update_block(replay, BLOCK)
    vector.tolist()


def run_replays(replay: ReplayBuffer, runs: int, joined: bool) -> list[ReplayBuffer]:
    """``runs`` replays of ``replay``'s rows, each with its own sampler (seed ``k``); ``joined``: copies of the rows as
    slices of one tensor, as ``JointTrainer`` joins a stack's replays (its step then gathers all batches at once),
    otherwise views of the same rows."""
    views = []
    for k in range(runs):
        view = ReplayBuffer(1, OBS, CONTEXT, ACTION, replay.device, seed=k)
        view.rows, view.storage, view.size, view.capacity = replay.rows, replay.storage, replay.size, replay.capacity
        views.append(view)
    if joined and runs > 1:
        ReplayBuffer.join(views)
    return views


def parallel_blocks(
    runs: int, cfg: LearnerConfig, device: torch.device, replay: ReplayBuffer, stacked: bool = True
) -> Callable[[], None]:
    """``runs`` SACs updated by one graph replay, stacked (``train.parallel_runs``: one step of all of them) or each
    a branch of the graph (how runs of different shapes train); each samples the shared rows with its own
    generator."""
    sacs = [SAC(OBS + CONTEXT, ACTION, cfg, device, seed=k) for k in range(runs)]
    replays = run_replays(replay, runs, joined=stacked)
    if stacked:
        blocks, replays = GraphedBlocks(RunStack.join([sac.stack for sac in sacs]), compile_math=True), [replays]
    else:
        blocks, replays = GraphedBlocks([sac.stack for sac in sacs], compile_math=True), [[r] for r in replays]

    def run() -> None:
        results = blocks.update_blocks(replays, BLOCK)
        torch.stack([vector for vector, _ in results]).tolist()  # one host read, as JointTrainer's blocks

    return run


def parallel_variant(name: str) -> tuple[str, int, str] | None:
    """``parallel_8_high`` → ``("parallel", 8, "high")``; no suffix: ``highest``; None for a one-run variant."""
    if not name.startswith(("parallel_", "branches_")):
        return None
    kind, runs, *precision = name.split("_")
    return kind, int(runs), precision[0] if precision else "highest"


ONE_RUN = {"highest": "graphed_compiled", "high": "compiled_high", "bf16": "compiled_bf16"}
"""The one-run variant each precision's parallel variants are measured against."""


def make_runners(
    name: str, device: torch.device, batch: int, replay: ReplayBuffer, capacity: int
) -> Callable[[], None]:
    if parallel := parallel_variant(name):
        kind, runs, precision = parallel
        return parallel_blocks(runs, learner_config(batch, precision), device, replay, stacked=kind == "parallel")
    precision = name.removeprefix("compiled_") if name in ("compiled_high", "compiled_bf16") else "highest"
    in_dim, cfg = OBS + CONTEXT, learner_config(batch, precision)
    if name == "eager_loop":
        return EagerLoop(device, batch, capacity).block
    sac = SAC(in_dim, ACTION, cfg, device, seed=0, guard=name != "graphed_noguard")
    compiled = name == "graphed_compiled" or name.startswith("compiled_")
    blocks = sac if name == "dmsac_eager" else GraphedBlocks(sac.stack, compile_math=compiled)
    return lambda: sac_block(blocks, replay)


# -- timing -----------------------------------------------------------------------------------------
def timed(run: Callable[[], None], blocks: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(blocks):
        run()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_batch(batch: int, variants: list[str], args: argparse.Namespace, device: torch.device) -> dict:
    replay = filled_replay(device, args.capacity)
    runners, blocks, errors = {}, {}, {}
    for name in variants:
        try:
            started = time.perf_counter()
            run = make_runners(name, device, batch, replay, args.capacity)
            run()  # warm-up: capture, compile, cuBLAS handles
            run()
            per_block = timed(run, 1)
            runners[name], blocks[name] = run, max(1, math.ceil(args.seconds / per_block))
            print(f"  batch {batch} {name}: ready in {time.perf_counter() - started:.1f} s", flush=True)
        except Exception as error:  # noqa: BLE001 - a variant that fails is reported, not fatal
            errors[name] = f"{type(error).__name__}: {error}"[:500]
            print(f"  batch {batch} {name}: FAILED {errors[name]}", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            runs = parallel[1] if (parallel := parallel_variant(name)) else 1
            rates[name].append(runs * blocks[name] * BLOCK / timed(run, blocks[name]))
    del runners
    torch.cuda.empty_cache()
    return {"rates": rates, "errors": errors}


def summarize(batch: int, raw: dict) -> dict:
    rows = {n: {"median": statistics.median(r), "min": min(r), "max": max(r)} for n, r in raw["rates"].items()}
    base = rows.get("eager_loop", {}).get("median")
    for row in rows.values():
        row["x_eager_loop"] = row["median"] / base if base else None
    for name, row in rows.items():
        parallel = parallel_variant(name)
        one = rows.get(ONE_RUN[parallel[2]], {}).get("median") if parallel else None
        row["x_one_run"] = row["median"] / one if one else None
    on, off = rows.get("graphed", {}).get("median"), rows.get("graphed_noguard", {}).get("median")
    guard = 100.0 * (off - on) / off if on and off else None
    return {
        "batch": batch,
        "variants": rows,
        "guard_overhead_pct": guard,
        "errors": raw["errors"],
        "rates": raw["rates"],
    }


def gpu_machine() -> dict:
    """``bench.common.machine`` and what nvidia-smi says of the GPU."""
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        smi = "nvidia-smi unavailable"
    return {**machine(), "nvidia_smi": smi}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Learner update rate (SAC updates/s, one GPU)", "",
        f"{machine_line(m)}; nvidia-smi: {m['nvidia_smi']}.  ",
        f"Command: `{report['command']}`", "",
        "| batch | variant | updates/s (median) | min..max | x eager_loop |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for result in report["results"]:
        for name, row in result["variants"].items():
            ratio = f"{row['x_eager_loop']:.1f}" if row["x_eager_loop"] else "-"
            lines.append(
                f"| {result['batch']} | {name} | {row['median']:,.0f} | {row['min']:,.0f}..{row['max']:,.0f} | {ratio} |"
            )
        for name, error in result["errors"].items():
            lines.append(f"| {result['batch']} | {name} | failed: {error[:120]} | | |")
    parallel = [(r["batch"], n, row) for r in report["results"] for n, row in r["variants"].items() if row.get("x_one_run")]
    if parallel:
        lines += ["", "| batch | runs in one graph | how | precision | updates/s, all runs | per run | x one run (same "
                  "precision) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for batch, name, row in parallel:
            kind, runs, precision = parallel_variant(name)
            how = "stacked" if kind == "parallel" else "branches"
            lines.append(f"| {batch} | {runs} | {how} | {precision} | {row['median']:,.0f} | {row['median'] / runs:,.0f} "
                         f"| {row['x_one_run']:.2f} |")  # fmt: skip
    lines += ["", "| batch | guard overhead (graphed vs graphed_noguard) |", "|---|---|"]
    for result in report["results"]:
        g = result["guard_overhead_pct"]
        lines.append(f"| {result['batch']} | {'-' if g is None else f'{g:+.1f} %'} |")
    lines += [
        "",
        f"Targets: >= {TARGET_FLOOR:.0f}x eager_loop at batch 256 (aim {TARGET_AIM:.0f}x); guard overhead <= {GUARD_LIMIT:.0f} %; "
        "8 runs in one graph >= 5x one run.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    variants_all = ["eager_loop", "dmsac_eager", "graphed", "graphed_noguard", "graphed_compiled", "compiled_high",
                    "compiled_bf16", "parallel_4", "parallel_8", "branches_8", "parallel_8_high", "branches_8_high",
                    "parallel_8_bf16"]  # fmt: skip
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--variants", nargs="+", default=variants_all, choices=variants_all)
    parser.add_argument("--seconds", type=float, default=1.0, help="target seconds per timed round and variant")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("learner_speed needs a CUDA GPU (absolute figures come only from the GPU machine)")
    device = torch.device("cuda")
    report = {"machine": gpu_machine(), "command": command_line(), "block": BLOCK, "results": []}
    print(json.dumps(report["machine"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for batch in args.batches:
        report["results"].append(summarize(batch, bench_batch(batch, args.variants, args, device)))
        write_report(args.out, "learner_speed", report, markdown(report))  # partial results survive
    print(markdown(report))


if __name__ == "__main__":
    main()
