"""Runs stacked on a leading dimension (``learner.stack.RunStack``): one step of batched products for all of them,
each run's update what it makes alone (the same samples; the numbers to float32 rounding), its state, checkpoint and
snapshot its own slice."""

from __future__ import annotations

import pytest
import torch

from learner.replay import INDEX_RANGE, ReplayBuffer, joint_rows
from learner.sac import SAC
from learner.stack import RunStack, aligned, update_blocks
from tests.learner.helpers import DIMS, RUN_ALONE_TOLERANCE, random_batch, with_config

CPU = torch.device("cpu")
RUNS = [(3, with_config(lr=1e-3)), (4, with_config(lr=3e-4, initial_alpha=0.5)), (5, with_config(reward_scale=0.1))]
"""(seed, config) of three runs that may share a stack: seeds, learning rates, reward scales, initial temperatures."""


def make_runs() -> list[SAC]:
    return [SAC(DIMS.policy_in, DIMS.action_dim, config, CPU, seed=seed) for seed, config in RUNS]


def make_replays() -> list[ReplayBuffer]:
    replays = []
    for k in range(len(RUNS)):
        replay = ReplayBuffer(500, DIMS.obs_dim, DIMS.context_dim, DIMS.action_dim, CPU, seed=10 + k)
        replay.add(random_batch(size=100 + 10 * k, seed=20 + k, reward_scale=5.0))
        replays.append(replay)
    return replays


def flat(sac: SAC) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in sac.state_tensors()])


def test_runs_in_one_stack_make_the_updates_they_make_alone():
    """Three runs of different seeds, rates and temperatures: each one's six updates in the stack against the same
    run alone — the same replay rows (its own generator), statistics and state to float32 rounding, and a change
    from the start a thousand times larger than that (a lost or doubled Adam step would show)."""
    alone, joined = make_runs(), make_runs()
    before = [flat(sac).clone() for sac in alone]
    stack = RunStack.join([sac.stack for sac in joined])
    assert len(stack.runs) == 3 and tuple(stack.actor[0].shape[:1]) == (3,)
    solo = [sac.update_block(replay, 6) for sac, replay in zip(alone, make_replays(), strict=True)]
    together = update_blocks([stack], [make_replays()], 6)
    for (a_vector, a_indices), (j_vector, j_indices) in zip(solo, together, strict=True):
        assert torch.equal(a_indices, j_indices)
        torch.testing.assert_close(j_vector, a_vector, rtol=1e-4, atol=1e-5)
    for a, j, start in zip(alone, joined, before, strict=True):
        torch.testing.assert_close(flat(j), flat(a), **RUN_ALONE_TOLERANCE)
        change = flat(a) - start
        assert ((flat(j) - start) - change).norm() / change.norm() < 1e-3 and a.updates_done == j.updates_done == 6
        weight, stacked = j.actor.net[0].weight, stack.actor[0][joined.index(j)]  # the networks: views of the stack
        assert weight.data_ptr() == stacked.data_ptr() and torch.equal(weight, stacked[:, : DIMS.policy_in])
        # the first layers' alignment columns (ALIGNED_WIDTH) stay zero, and so do their Adam moments
        for padded, width in ((stack.actor[0], DIMS.policy_in), (stack.critic[0], DIMS.policy_in + DIMS.action_dim),
                              (stack.target[0], DIMS.policy_in + DIMS.action_dim),
                              (stack.critic_adam.exp_avg_sqs[0], DIMS.policy_in + DIMS.action_dim)):  # fmt: skip
            assert padded.shape[-1] == aligned(width) > width and not padded[..., width:].any()
        assert float(j.alpha()) == pytest.approx(float(a.alpha()), rel=1e-6)
    assert (flat(joined[0]) - flat(joined[1])).abs().max() > 0.01  # and the runs really differ


def test_a_blocks_draws_are_each_runs_own_generators_next_made_before_the_block():
    """``draw_block``: a block of 5 updates is, per run, its replay sampler's next 5 × batch integers mod its replay's
    size (run by run: 100, 110, 120 rows) and its noise generator's (seed + 1) next 5 × 2 × batch × action_dim
    normals, drawn before the first update; the generators end exactly past them."""
    runs, replays = make_runs(), make_replays()
    stack = RunStack.join([sac.stack for sac in runs])
    batch, count = runs[0].config.batch_size, 5
    results = update_blocks([stack], [replays], count)
    for k, ((seed, _), replay, (_, rows)) in enumerate(zip(RUNS, replays, results, strict=True)):
        sampler, noise = torch.Generator().manual_seed(10 + k), torch.Generator().manual_seed(seed + 1)
        drawn = torch.randint(0, INDEX_RANGE, (count * batch,), generator=sampler)
        assert rows.shape == (count, batch) and torch.equal(rows.reshape(-1), drawn % (100 + 10 * k))
        expected_noise = torch.randn((count, 2 * batch, DIMS.action_dim), generator=noise)
        assert torch.equal(stack.block_noise[k, :count], expected_noise)
        assert torch.equal(replay.generator.get_state(), sampler.get_state())
        assert torch.equal(runs[k].noise.get_state(), noise.get_state())


def test_runs_on_joined_replays_gather_all_batches_at_once_and_make_the_same_updates(monkeypatch):
    """``ReplayBuffer.join`` (as ``JointTrainer`` does): the stack's step gathers every run's batch in one indexing of
    the joint rows, not a gather per replay, and the updates are exactly those on replays apart."""
    apart, together = make_runs(), make_runs()
    stacks = [RunStack.join([sac.stack for sac in runs]) for runs in (apart, together)]
    replays_apart, replays_joined = make_replays(), make_replays()
    joint = ReplayBuffer.join(replays_joined)
    assert joint_rows(replays_joined) is joint and joint_rows(replays_apart) is None
    expected = update_blocks([stacks[0]], [replays_apart], 6)
    gathers = []

    def gather_recorded(self, index):
        gathers.append(index)
        return self.rows[index]

    monkeypatch.setattr(ReplayBuffer, "gather", gather_recorded)
    got = update_blocks([stacks[1]], [replays_joined], 6)
    assert gathers == []
    for (want_stats, want_rows), (stats, rows) in zip(expected, got, strict=True):
        assert torch.equal(rows, want_rows) and torch.equal(stats, want_stats)
    for a, j in zip(apart, together, strict=True):
        assert torch.equal(flat(j), flat(a))


def test_a_block_made_several_updates_at_a_time_is_the_block_made_one_at_a_time():
    """``update_blocks(run_steps=...)`` (a CUDA graph of several updates, replayed): a block of 7 asked of a
    ``run_steps`` that makes at most 3 per call is 3 + 3 + 1 updates, the same rows and numbers as one at a time, and
    every run counts 7."""
    one_at_a_time, chunked = make_runs(), make_runs()
    stacks = [RunStack.join([sac.stack for sac in runs]) for runs in (one_at_a_time, chunked)]
    expected = update_blocks([stacks[0]], [make_replays()], 7)
    replays, asked = make_replays(), []

    def up_to_three(updates: int) -> int:
        asked.append(updates)
        for _ in range(min(updates, 3)):
            stacks[1].sampled_step(replays)
        return min(updates, 3)

    got = update_blocks([stacks[1]], [replays], 7, run_steps=up_to_three)
    assert asked == [7, 4, 1]
    for (want_stats, want_rows), (stats, rows) in zip(expected, got, strict=True):
        assert rows.shape == (7, 8) and torch.equal(rows, want_rows) and torch.equal(stats, want_stats)
    for a, c in zip(one_at_a_time, chunked, strict=True):
        assert torch.equal(flat(c), flat(a)) and a.updates_done == c.updates_done == 7


def test_a_joined_run_alone_and_its_snapshots_act_on_its_slice_of_the_stack():
    runs = make_runs()
    stack = RunStack.join([sac.stack for sac in runs])
    replays = make_replays()
    before = [flat(sac).clone() for sac in runs]
    snapshot = runs[1].device_snapshot()
    runs[1].update_block(replays[1], 3)  # run 1 alone, through its own stack of one (views of the joint stack)
    assert torch.equal(stack.actor[0][1], runs[1].stack.actor[0][0]) and not torch.equal(flat(runs[1]), before[1])
    assert torch.equal(flat(runs[0]), before[0]) and torch.equal(flat(runs[2]), before[2])
    runs[1].restore_device_snapshot(snapshot)
    assert torch.equal(flat(runs[1]), before[1]) and torch.equal(stack.critic[2][1], runs[1].stack.critic[2][0])


def test_a_joined_runs_checkpoint_holds_its_own_slice_and_loads_into_it():
    runs = make_runs()
    RunStack.join([sac.stack for sac in runs])
    state = runs[2].state_dict()
    weight = state["actor"]["net.0.weight"]
    assert weight.shape == (16, DIMS.policy_in) and weight.untyped_storage().nbytes() == weight.numel() * 4
    assert state["reward_scale"] == 0.1 and float(state["temperature"]["optimizer"]["state"][0]["step"]) == 0.0
    runs[0].load_state_dict(state)
    assert torch.equal(flat(runs[0]), flat(runs[2])) and runs[0].rates_in_force == (0.1, 1e-3)
    assert float(runs[0].reward_scale) == pytest.approx(0.1) and float(runs[1].reward_scale) == 1.0


def test_runs_of_different_shapes_do_not_share_a_stack():
    small = SAC(DIMS.policy_in, DIMS.action_dim, with_config(), CPU, seed=0)
    wide = SAC(DIMS.policy_in, DIMS.action_dim, with_config(hidden_sizes=(32, 32)), CPU, seed=0)
    with pytest.raises(ValueError, match="one spec"):
        RunStack.join([small.stack, wide.stack])

