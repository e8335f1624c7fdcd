"""The actors' CPU policy copy: batched actions in [-1, 1], seeded sampling, newer-only weight loads."""

import numpy as np
import torch

from actors.policy import PolicyCopy
from learner.weights import make_versioned

OBS = np.linspace(-2.0, 2.0, 15, dtype=np.float32).reshape(5, 3)
CONTEXT = np.linspace(1.0, -1.0, 10, dtype=np.float32).reshape(5, 2)


def test_act_concatenates_obs_and_context_and_squashes_the_mean_when_deterministic():
    policy = PolicyCopy(5, 2, (8,), seed=0)
    action = policy.act(OBS, CONTEXT, deterministic=True)
    assert action.shape == (5, 2) and action.dtype == np.float32
    with torch.no_grad():
        mean, _ = policy.network(torch.from_numpy(np.concatenate([OBS, CONTEXT], axis=-1)))
    np.testing.assert_allclose(action, torch.tanh(mean).numpy(), rtol=0, atol=1e-7)


def test_sampled_actions_lie_in_range_and_repeat_for_the_same_seed_only():
    first, again, other = (PolicyCopy(5, 1, (8,), seed=s) for s in (3, 3, 4))
    for copy in (again, other):  # the same network; the seed is the sampling generator's only
        copy.network.load_state_dict(first.network.state_dict())
    a, b, c = (p.act(OBS, CONTEXT) for p in (first, again, other))
    assert a.shape == (5, 1) and np.abs(a).max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(first.act(OBS, CONTEXT), a)  # the generator moves on


def test_an_empty_context_is_allowed():
    policy = PolicyCopy(3, 1, (8,), seed=0)
    assert policy.act(OBS, np.zeros((5, 0), np.float32), deterministic=True).shape == (5, 1)


def test_load_takes_only_newer_versions():
    policy = PolicyCopy(5, 1, (8,), seed=0)
    newer = PolicyCopy(5, 1, (8,), seed=1).network.state_dict()
    stale = PolicyCopy(5, 1, (8,), seed=2).network.state_dict()
    policy.load(make_versioned(3, newer))
    assert policy.version == 3
    for version in (3, 2):  # equal and older: ignored
        policy.load(make_versioned(version, stale))
    assert policy.version == 3
    assert all(torch.equal(policy.network.state_dict()[k], newer[k]) for k in newer)


def test_parameters_finite_sees_a_single_nan():
    policy = PolicyCopy(5, 1, (8,), seed=0)
    assert policy.parameters_finite()
    tensors = {k: v.clone() for k, v in policy.network.state_dict().items()}
    tensors["net.0.bias"][2] = float("nan")
    policy.load(make_versioned(1, tensors))
    assert not policy.parameters_finite()
