"""Two contexts side by side: privileged information for the critic only (asymmetric actor-critic), or a second
context for both (``context.append_history``): study arms of the vehicle env.

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


class JoinedContext:
    """``[first ‖ second]`` per environment; ``policy_context_dim`` says how much of it the policy sees: all of it, or
    with ``second_for_critics_only`` the first part alone (the privileged critic)."""

    def __init__(self, first: ContextProvider, second: ContextProvider, second_for_critics_only: bool = False) -> None:
        self.first, self.second = first, second
        self.context_dim = first.context_dim + second.context_dim
        self.policy_context_dim = first.context_dim if second_for_critics_only else self.context_dim

    def reset(self, env_ids: np.ndarray) -> None:
        self.first.reset(env_ids)
        self.second.reset(env_ids)

    def observe(self, samples: np.ndarray | None, present: np.ndarray | None = None) -> None:
        self.first.observe(samples, present)
        self.second.observe(samples, present)

    def context(self) -> np.ndarray:
        return np.concatenate([self.first.context(), self.second.context()], axis=1)

    def take_fallback_counts(self) -> dict[str, int]:
        counts = dict(self.first.take_fallback_counts())
        for reason, count in self.second.take_fallback_counts().items():
            counts[reason] = counts.get(reason, 0) + count
        return counts
