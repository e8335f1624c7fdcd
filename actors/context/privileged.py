"""Privileged information for the critic only (asymmetric actor-critic): a study arm of the vehicle env.

``context.privileged_critic: true`` appends each vehicle's true parameters (the oracle context) to the
context the policy sees; the learner feeds the whole vector to the critics and only the leading
``policy_context_dim`` values to the policy, and so does every copy of the policy (rollout, evaluation).
The critics judge actions knowing the vehicle exactly, which sharpens the policy's gradient, while the
policy itself needs nothing a real vehicle does not offer. A known remedy when a policy must act on a
partial context (Pinto et al., "Asymmetric Actor Critic for Image-Based Robot Learning", 2017).
"""

from __future__ import annotations

import numpy as np

from actors.context.base import ContextProvider


class PrivilegedCriticContext:
    """``[policy context ‖ critic-only context]`` per environment; ``policy_context_dim`` says where the cut is."""

    def __init__(self, policy_part: ContextProvider, critic_part: ContextProvider) -> None:
        self.policy_part, self.critic_part = policy_part, critic_part
        self.policy_context_dim = policy_part.context_dim
        self.context_dim = policy_part.context_dim + critic_part.context_dim

    def reset(self, env_ids: np.ndarray) -> None:
        self.policy_part.reset(env_ids)
        self.critic_part.reset(env_ids)

    def observe(self, samples: np.ndarray | None, present: np.ndarray | None = None) -> None:
        self.policy_part.observe(samples, present)
        self.critic_part.observe(samples, present)

    def context(self) -> np.ndarray:
        return np.concatenate([self.policy_part.context(), self.critic_part.context()], axis=1)

    def take_fallback_counts(self) -> dict[str, int]:
        counts = dict(self.policy_part.take_fallback_counts())
        for reason, count in self.critic_part.take_fallback_counts().items():
            counts[reason] = counts.get(reason, 0) + count
        return counts
