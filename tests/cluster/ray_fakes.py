"""Stand-ins for Ray actors, so the driver-side code of ``cluster.learner_handle`` and ``cluster.ray_driver`` runs
without Ray: ``actor.method.remote(*args)`` records the call and returns a ref-like (hashable) tuple."""

from __future__ import annotations

from learner.service import Progress


class FakeMethod:
    def __init__(self, actor: FakeActor, name: str, num_returns: int = 1) -> None:
        self.actor, self.name, self.num_returns = actor, name, num_returns

    def options(self, num_returns: int = 1, **_) -> FakeMethod:
        return FakeMethod(self.actor, self.name, num_returns)

    def remote(self, *args):
        """``(actor number, method, call number)``; with ``num_returns=n``, n such refs with the index appended."""
        self.actor.calls.append((self.name, args))
        ref = (self.actor.number, self.name, len(self.actor.calls))
        return ref if self.num_returns == 1 else tuple((*ref, i) for i in range(self.num_returns))


class FakeActor:
    def __init__(self, number: int, args: tuple) -> None:
        self.number, self.args = number, args
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str) -> FakeMethod:
        if name.startswith("__"):
            raise AttributeError(name)
        return FakeMethod(self, name)


class FakeActorClass:
    """``ActorClass.options(**options).remote(*args)``: records the options and the actors started."""

    def __init__(self) -> None:
        self.started: list[FakeActor] = []
        self.options_seen: list[dict] = []

    def options(self, **options) -> FakeActorClass:
        self.options_seen.append(options)
        return self

    def remote(self, *args) -> FakeActor:
        self.started.append(FakeActor(len(self.started), args))
        return self.started[-1]


def progress(env_steps: int, updates: int = 0, checkpoint: int = -1, counters: dict | None = None) -> Progress:
    return Progress(
        env_steps=env_steps, updates=updates, updates_per_second=0.0, update_to_data=0.0, recent_return=float("nan"),
        episodes=0, weights_version=0, replay_size=0, last_checkpoint_step=checkpoint, counters=counters or {},
    )  # fmt: skip
