"""Telling an actor that waits for resources from a slow start: the GCS's pending demands, by shape."""

from __future__ import annotations

import os

import pytest

from cluster import placement
from cluster.config import Config, build
from cluster.placement import SchedulingWatch, resource_shape
from cluster.runner import CapacityError

CLUSTER = ({"CPU": 2.0, "memory": 1e9, "node:127.0.0.1": 1.0}, {"memory": 1e9})


@pytest.fixture
def init_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every ``ray.init`` the driver makes, on a 2-core machine with no Ray connected."""
    calls: list[dict] = []
    monkeypatch.setattr(placement.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(placement.ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    return calls


def watch(demands: list[dict[str, float]]) -> SchedulingWatch:
    return SchedulingWatch(timeout_s=0.0, demands=lambda: demands, every_s=0.0, cluster=lambda: CLUSTER)


def test_resource_shapes_of_actor_options():
    assert resource_shape({"num_cpus": 1}) == {"CPU": 1.0}
    assert resource_shape({"num_cpus": 1, "num_gpus": 1, "resources": {"dmsac_learner": 1}}) == {
        "CPU": 1.0, "GPU": 1.0, "dmsac_learner": 1.0,
    }  # fmt: skip


def test_a_pending_demand_of_an_awaited_shape_is_exit_3_naming_what_is_missing():
    awaited = {"the learner": {"CPU": 1.0}, "rollout actor 0": {"CPU": 1.0}, "rollout actor 1": {"CPU": 1.0}}
    with pytest.raises(CapacityError) as err:
        watch([{"CPU": 1.0}]).check(awaited, "the job needs 3 CPUs (2 rollout actors + the learner)")
    assert str(err.value) == (
        "the cluster cannot give the job what it needs: Ray has kept requests for {CPU: 1} pending for over 0 s "
        "(cluster.schedule_timeout_s); not started yet: the learner, rollout actor 0, rollout actor 1; the cluster "
        "has {CPU: 2} in all, {} free; the job needs 3 CPUs (2 rollout actors + the learner)"
    )


def test_no_demand_or_another_shape_is_a_slow_start_not_a_failure():
    awaited = {"the learner": {"CPU": 1.0, "GPU": 1.0}}
    watch([]).check(awaited, "")  # starting (runtime env, worker process): resources held, nothing pending
    watch([{"CPU": 1.0}]).check(awaited, "")  # someone else's demand
    watch([{"CPU": 1.0}]).check({}, "")  # every actor answered


def test_a_demand_must_last_the_timeout():
    slow = SchedulingWatch(timeout_s=3600.0, demands=lambda: [{"CPU": 1.0}], every_s=0.0, cluster=lambda: CLUSTER)
    assert slow.stuck({"rollout actor 0": {"CPU": 1.0}}) == {}
    assert list(slow.pending_since) == [(("CPU", 1.0),)]  # seen, the clock runs
    assert slow.stuck({}) == {} and slow.pending_since == {}  # answered: forgotten


@pytest.mark.parametrize(
    ("address", "running", "expected"),
    [
        ("", "127.0.0.1:6379", {"address": "127.0.0.1:6379"}),  # empty: join the running cluster
        ("", None, {"address": "local", "num_cpus": 9, "include_dashboard": False}),  # none runs: a local instance
        ("local", "127.0.0.1:6379", {"address": "local", "num_cpus": 9, "include_dashboard": False}),  # always local
        ("10.0.0.5:6379", None, {"address": "10.0.0.5:6379"}),
    ],
)  # fmt: skip
def test_where_the_driver_connects(monkeypatch, init_calls, address, running, expected):
    monkeypatch.setattr(placement, "running_cluster_address", lambda: running)
    config = build(Config, {"cluster": {"address": address, "num_actors": 8}}, "test.yaml")
    assert placement.connect(config) is True and init_calls == [expected]  # 8 actors + the learner: 9 logical CPUs


def test_a_local_instance_has_a_cpu_for_every_runs_actors(init_calls):
    config = build(Config, {"cluster": {"address": "local", "num_actors": 2}, "train": {"parallel_runs": 3}}, "t.yaml")
    placement.connect(config)
    assert init_calls[0]["num_cpus"] == 7  # 3 runs x 2 rollout actors + the learner


@pytest.mark.parametrize(
    ("device", "fraction", "gpus", "expected"),
    [
        ("auto", 1.0, 1.0, {"num_cpus": 1, "num_gpus": 1.0}),
        ("auto", 0.25, 1.0, {"num_cpus": 1, "num_gpus": 0.25}),  # four learners share the GPU
        ("auto", 0.25, 0.0, {"num_cpus": 1}),  # no GPU in the cluster: the CPU
        ("cpu", 0.25, 1.0, {"num_cpus": 1}),
    ],
)
def test_the_learner_asks_for_its_share_of_a_gpu(monkeypatch, device, fraction, gpus, expected):
    monkeypatch.setattr(placement.ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": gpus})
    config = build(Config, {"learner": {"device": device}, "cluster": {"learner_gpu_fraction": fraction}}, "test")
    assert placement.learner_options(config) == expected


def test_a_gpu_fraction_outside_0_1_is_a_config_error():
    from cluster.config import ClusterConfig
    from tests.config_errors import error_of

    for value, message in ((0.0, "must be > 0.0 (got 0.0)"), (1.5, "must be <= 1.0 (got 1.5)")):
        err = error_of(ClusterConfig, learner_gpu_fraction=value)
        assert (err.key, err.message) == ("learner_gpu_fraction", message)
