"""Replay buffer preallocated on the learner's device; sampling never leaves it."""

from __future__ import annotations

import torch

FIELDS = ("obs", "context", "action", "reward", "next_obs", "next_context", "terminated")
SCALAR_FIELDS = ("reward", "terminated")
INDEX_RANGE = 2**62
"""Indices are ``randint(0, INDEX_RANGE) mod size``: uniform within 1e-12, with ``size`` a device tensor."""


class ReplayBuffer:
    """A ring of ``capacity`` transitions stored as device tensors.

    ``add`` takes a batch of transitions (any leading size); when the ring is
    full the oldest are overwritten. ``sample_indices`` draws indices on the device with
    the buffer's own generator, so sampling is reproducible and resumable.

    A transition is one row of ``rows`` (the fields side by side, in ``FIELDS`` order): a batch is gathered by
    one kernel, and ``obs, context`` (the policy's input) and ``obs, context, action`` (the critics') are column
    ranges of it, so the update reads them without concatenating. ``storage[name]`` is each field's view.
    """

    def __init__(
        self, capacity: int, obs_dim: int, context_dim: int, action_dim: int, device: torch.device, seed: int = 0
    ) -> None:
        self.capacity = capacity
        self.device = device
        self.columns = field_columns(obs_dim, context_dim, action_dim)
        self.rows = torch.zeros((capacity, self.columns["terminated"].stop), device=device)
        self.storage = self.fields(self.rows)
        self.position = 0
        self.size = 0
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    @staticmethod
    @torch.no_grad()
    def join(replays: list[ReplayBuffer]) -> torch.Tensor | None:
        """Move the rows of ``replays`` into one ``[K, capacity, width]`` tensor, each replay's rows a view of its slice
        (contents kept), and return it: a stack of runs gathers all their batches from it at once
        (``joint_rows``). None, nothing moved, where their capacities, widths or devices differ."""
        if len({(tuple(r.rows.shape), r.rows.device) for r in replays}) != 1:
            return None
        joint = torch.stack([replay.rows for replay in replays])
        for replay, rows in zip(replays, joint, strict=True):
            replay.rows, replay.storage = rows, replay.fields(rows)
        return joint

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        count = int(batch["reward"].shape[0])
        if count == 0:
            return
        if count > self.capacity:  # only the newest `capacity` can survive
            batch = {k: v[-self.capacity :] for k, v in batch.items()}
            count = self.capacity
        index = (self.position + torch.arange(count, device=self.device)) % self.capacity
        self.rows[index] = transition_rows(batch).to(self.device, non_blocking=True)
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def sample_indices(self, batch_size: int, size: torch.Tensor | None = None) -> torch.Tensor:
        """Uniform rows of the filled part. ``size``: the filled size as a device tensor, which a captured CUDA
        graph reads at every replay (the buffer grows under it); default the size now."""
        size = torch.tensor(self.size, device=self.device) if size is None else size
        return self.draw(batch_size).remainder_(size)

    def draw(self, batch_size: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """``sample_indices`` before the ``mod size``: this buffer's generator's next draws, into ``out`` if given
        (a block's draws of several runs are reduced by one ``remainder`` in ``RunStack.draw_block``)."""
        if out is None:
            out = torch.empty(batch_size, dtype=torch.long, device=self.device)
        return torch.randint(0, INDEX_RANGE, (batch_size,), generator=self.generator, device=self.device, out=out)

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """The transitions at ``index`` as rows (one gather); ``fields`` names their columns."""
        return self.rows[index]

    def fields(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``rows`` per field; reward and terminated as vectors."""
        return {name: rows[:, c.start] if name in SCALAR_FIELDS else rows[:, c] for name, c in self.columns.items()}

    def state_dict(self) -> dict:
        live = slice(0, self.size)
        return {
            # a copy of the live rows: on the CPU a slice is a view, and torch.save would write the whole ring
            "storage": {k: v[live].to("cpu", copy=True) for k, v in self.storage.items()},
            "position": self.position,
            "size": self.size,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"replay snapshot holds {size} transitions, capacity is {self.capacity}")
        for name in FIELDS:
            self.storage[name][:size] = state["storage"][name].to(self.device)
        self.position = int(state["position"]) % self.capacity
        self.size = size
        self.generator.set_state(state["generator"])


def joint_rows(replays: list[ReplayBuffer]) -> torch.Tensor | None:
    """The ``[K, capacity, width]`` tensor whose slices, in order, are the rows of ``replays`` (``ReplayBuffer.join``:
    a stack of runs then gathers all their batches at once); None where they are not."""
    joint = replays[0].rows._base
    if joint is None or joint.dim() != 3 or joint.shape[0] != len(replays):
        return None
    if any(replay.rows.data_ptr() != joint[k].data_ptr() for k, replay in enumerate(replays)):
        return None
    return joint


def field_columns(obs_dim: int, context_dim: int, action_dim: int) -> dict[str, slice]:
    """Each field's columns in a row: the fields side by side in ``FIELDS`` order."""
    widths = (obs_dim, context_dim, action_dim, 1, obs_dim, context_dim, 1)
    ends = [sum(widths[: i + 1]) for i in range(len(widths))]
    return {name: slice(end - width, end) for name, width, end in zip(FIELDS, widths, ends, strict=True)}


def transition_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A batch of transitions (fields by name) as the buffer's rows: the fields side by side in ``FIELDS`` order."""
    count = int(batch["reward"].shape[0])
    return torch.cat([batch[name].reshape(count, -1).to(torch.float32) for name in FIELDS], dim=1)


def transition_layout(state_dim: int, action_dim: int) -> dict[str, slice]:
    """The update's columns of a row: ``state`` (obs ‖ context), ``action``, ``reward``, ``next_state``,
    ``terminated`` — the fields' columns with each observation and its context merged (they are adjacent, and so are
    ``state`` and ``action``: the critics' input is one column range). Any split of ``state_dim`` gives the same."""
    f = field_columns(state_dim, 0, action_dim)
    return {"state": slice(f["obs"].start, f["context"].stop), "action": f["action"], "reward": f["reward"],
            "next_state": slice(f["next_obs"].start, f["next_context"].stop), "terminated": f["terminated"]}  # fmt: skip
