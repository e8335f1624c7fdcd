import pytest
import torch

from learner.replay import ReplayBuffer, transition_layout, transition_rows


def batch(start: int, count: int) -> dict[str, torch.Tensor]:
    ids = torch.arange(start, start + count, dtype=torch.float32)
    return {
        "obs": ids[:, None].repeat(1, 3),
        "context": ids[:, None].repeat(1, 2) * 10,
        "action": -ids[:, None],
        "reward": ids * 0.5,
        "next_obs": ids[:, None].repeat(1, 3) + 1,
        "next_context": ids[:, None].repeat(1, 2) * 10 + 1,
        "terminated": (ids % 2),
    }


def make(capacity: int = 5) -> ReplayBuffer:
    return ReplayBuffer(capacity, obs_dim=3, context_dim=2, action_dim=1, device=torch.device("cpu"), seed=3)


def test_wrap_around_overwrites_oldest():
    replay = make(5)
    replay.add(batch(0, 4))
    replay.add(batch(4, 3))  # ids 4, 5, 6: 5 and 6 wrap to slots 0 and 1
    assert len(replay) == 5
    assert replay.position == 2
    assert replay.storage["obs"][:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert replay.storage["reward"].tolist() == [2.5, 3.0, 1.0, 1.5, 2.0]
    assert replay.storage["next_context"][:, 0].tolist() == [51.0, 61.0, 21.0, 31.0, 41.0]


def test_batch_larger_than_capacity_keeps_newest():
    replay = make(3)
    replay.add(batch(0, 7))
    assert sorted(replay.storage["obs"][:, 0].tolist()) == [4.0, 5.0, 6.0]
    assert len(replay) == 3


def test_sampling_stays_in_filled_part_and_is_seeded():
    replay = make(100)
    replay.add(batch(0, 10))
    index = replay.sample_indices(1000)
    assert int(index.min()) >= 0 and int(index.max()) <= 9
    other = make(100)
    other.add(batch(0, 10))
    assert torch.equal(other.sample_indices(1000), index)
    sample = replay.fields(replay.gather(index[:4]))
    assert torch.equal(sample["reward"], index[:4].float() * 0.5)
    assert torch.equal(sample["context"][:, 1], index[:4].float() * 10)


def test_state_round_trip_resumes_sampling():
    replay = make(5)
    replay.add(batch(0, 4))
    replay.add(batch(4, 3))
    replay.sample_indices(8)
    state = replay.state_dict()
    expected = replay.sample_indices(16)
    restored = make(5)
    restored.load_state_dict(state)
    assert restored.position == 2 and len(restored) == 5
    assert torch.equal(restored.sample_indices(16), expected)
    assert torch.equal(restored.storage["obs"], replay.storage["obs"])


def test_snapshot_larger_than_capacity_is_refused():
    replay = make(5)
    replay.add(batch(0, 5))
    with pytest.raises(ValueError, match="capacity is 3"):
        make(3).load_state_dict(replay.state_dict())


def test_a_snapshot_holds_the_live_rows_only(tmp_path):
    replay = make(10_000)
    replay.add(batch(0, 7))
    state = replay.state_dict()
    assert all(t.untyped_storage().nbytes() == t.numel() * 4 for t in state["storage"].values())  # not the whole ring
    torch.save(state, tmp_path / "replay.pt")
    assert (tmp_path / "replay.pt").stat().st_size < 10_000  # 7 transitions, not 10 000 rows of zeros


def test_a_transition_is_one_row_and_the_update_reads_its_inputs_as_column_ranges():
    """One gather gives the batch; ``state`` (obs ‖ context), ``state, action`` (the critics' input), reward,
    next state and termination are where ``transition_layout`` says."""
    replay = make(10)
    replay.add(batch(0, 6))
    rows = replay.gather(torch.tensor([4, 1]))
    assert rows.shape == (2, 3 + 2 + 1 + 1 + 3 + 2 + 1)
    assert rows[0].tolist() == [4, 4, 4, 40, 40, -4, 2.0, 5, 5, 5, 41, 41, 0]
    columns = transition_layout(state_dim=5, action_dim=1)
    assert rows[:, columns["state"]].tolist() == [[4, 4, 4, 40, 40], [1, 1, 1, 10, 10]]
    assert rows[:, columns["state"].start : columns["action"].stop].tolist() == [[4, 4, 4, 40, 40, -4], [1, 1, 1, 10, 10, -1]]
    assert rows[:, columns["reward"]].flatten().tolist() == [2.0, 0.5]
    assert rows[:, columns["next_state"]].tolist() == [[5, 5, 5, 41, 41], [2, 2, 2, 11, 11]]
    assert rows[:, columns["terminated"]].flatten().tolist() == [0.0, 1.0]
    assert torch.equal(rows, transition_rows(batch(0, 6))[[4, 1]])
    assert replay.fields(rows)["next_context"].tolist() == [[41, 41], [11, 11]]


def test_joined_replays_keep_their_rows_as_slices_of_one_tensor_and_go_on_as_before():
    first, second, wider = make(5), make(5), ReplayBuffer(5, 4, 2, 1, torch.device("cpu"), seed=3)
    first.add(batch(0, 3))
    second.add(batch(10, 4))
    assert ReplayBuffer.join([first, wider]) is None and wider.rows._base is None  # widths differ: nothing moved
    joint = ReplayBuffer.join([first, second])
    assert joint.shape == (2, 5, 13) and first.rows.data_ptr() == joint[0].data_ptr()
    assert second.rows.data_ptr() == joint[1].data_ptr()
    assert first.storage["obs"][:3, 0].tolist() == [0.0, 1.0, 2.0] and second.storage["reward"][:4].tolist() == [
        5.0, 5.5, 6.0, 6.5]  # fmt: skip
    second.add(batch(14, 3))  # wraps: ids 15 and 16 into slots 0 and 1, in the joint tensor
    assert joint[1, :, 0].tolist() == [15.0, 16.0, 12.0, 13.0, 14.0] and joint[0, 3:].abs().sum() == 0
    restored = make(5)
    restored.load_state_dict(second.state_dict())
    assert torch.equal(restored.rows, joint[1])
