"""Learner: idempotent ingestion, blocks of updates, gated publishing, versions."""

import dataclasses

import numpy as np
import torch

from tests.learner.helpers import make_fragment, make_learner


def test_ingest_inserts_valid_transitions_once():
    learner = make_learner()
    fragment = make_fragment(steps=4, envs=2, seq=1)
    valid = fragment.valid.copy()
    valid[1, 0] = False
    fragment = dataclasses.replace(fragment, valid=valid)
    assert learner.ingest(fragment) == 7
    assert learner.ingest(fragment) == -1  # the same fragment again: ignored
    assert len(learner.replay) == 7 and learner.env_steps == 8
    # a restarted actor (new incarnation) starts its seq again and is accepted
    assert learner.ingest(make_fragment(seq=1, incarnation=1)) == 8
    assert learner.ingest(make_fragment(seq=1, actor_id=1)) == 8
    stored = learner.replay.storage["obs"][:7]
    expected = np.delete(fragment.obs.reshape(8, 3), 2, axis=0)
    assert torch.allclose(stored, torch.from_numpy(expected))


def test_update_block_returns_block_stats_and_no_bad_index():
    learner = make_learner()
    for seq in range(1, 4):
        learner.ingest(make_fragment(steps=8, envs=2, seq=seq, seed=seq))
    result = learner.update_block(5)
    assert result.stats.updates == 5 and result.first_bad_index is None
    assert result.batch_indices.shape == (5, 8)
    assert result.stats.finite and learner.updates_done == 5


def test_first_bad_update_is_identified_by_index():
    learner = make_learner()
    learner.ingest(make_fragment(steps=8, envs=2, seq=1))
    learner.sac.grad_hook = lambda n, grads: grads[0].fill_(float("nan")) if n == 7 else None
    result = learner.update_block(5)  # updates 0..4: fine
    assert result.first_bad_index is None
    result = learner.update_block(5)  # updates 5..9: update 7 is index 2
    assert result.first_bad_index == 2
    assert result.stats.nonfinite_grad >= 1 and not result.stats.finite


def test_snapshot_restore_and_replay_reproduce_the_good_prefix():
    learner = make_learner()
    learner.ingest(make_fragment(steps=8, envs=2, seq=1))
    snapshot = learner.snapshot()
    result = learner.update_block(4)
    after = [p.clone() for p in learner.sac.critic.parameters()]
    learner.restore(snapshot)
    learner.replay_updates(result.batch_indices)
    assert all(torch.equal(a, b) for a, b in zip(after, learner.sac.critic.parameters(), strict=True))


def test_publish_versions_increase_and_rejections_do_not_consume_versions():
    learner = make_learner()
    first, _ = learner.publish()
    second, _ = learner.publish()
    assert (first.version, second.version) == (1, 2) and first.checksum == second.checksum
    with torch.no_grad():
        next(learner.sac.actor.parameters()).fill_(float("inf"))
    rejected, verdict = learner.publish()
    assert rejected is None and verdict.reason == "nonfinite"
    assert learner.weights_version == 2
