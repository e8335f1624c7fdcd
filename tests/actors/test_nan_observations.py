"""A real gymnasium environment that injects non-finite observations: none reaches the policy, the
environment or replay; only the transitions into the bad observations are dropped."""

from __future__ import annotations

import numpy as np
import torch

from actors.context.base import NoContext
from actors.gym_env import GymVectorEnv
from actors.policy import PolicyCopy
from actors.worker import RolloutWorker
from learner.config import LearnerConfig, ReplayConfig
from learner.learner import Dimensions, Learner
from tests.actors.nan_observation_env import INJECT_AT, NaNObservationPendulum

ENV_ID = "tests.actors.nan_observation_env:NaNObservationPendulum"


def test_injected_observations_never_reach_policy_environment_or_replay():
    NaNObservationPendulum.forget()
    env = GymVectorEnv(ENV_ID, 2)
    worker = RolloutWorker(env, NoContext(2), PolicyCopy(3, 1, (16,), seed=0), seed=0)
    seen: list[np.ndarray] = []
    act = worker.policy.act
    worker.policy.act = lambda obs, context, deterministic=False: seen.append(obs.copy()) or act(obs, context)
    fragment = worker.rollout(200)
    injected = NaNObservationPendulum.injected
    assert injected == 2 * len(INJECT_AT)  # each of the two environments, at each of its injection steps
    assert fragment.rejected["obs_nonfinite"] == injected <= 2 * injected  # the transition into each, only
    assert int((~fragment.valid).sum()) == injected
    assert sum(e.cut_short for e in fragment.episodes) == injected  # each one ended its episode early
    assert len(seen) == 200 and all(np.isfinite(obs).all() for obs in seen)
    assert len(NaNObservationPendulum.actions) == 400 and all(np.isfinite(a).all() for a in NaNObservationPendulum.actions)
    assert np.isfinite(fragment.obs).all()  # what the policy acted on, every step
    learner = Learner(Dimensions(3, 0, 1), LearnerConfig(hidden_sizes=(16,)), ReplayConfig(capacity=1000),
                      torch.device("cpu"), seed=0)  # fmt: skip
    assert learner.ingest(fragment) == 400 - injected
    live = {name: tensor[: len(learner.replay)] for name, tensor in learner.replay.storage.items()}
    assert all(bool(torch.isfinite(t).all()) for t in live.values())
