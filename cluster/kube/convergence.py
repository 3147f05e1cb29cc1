"""When has a real mesh converged on a policy? N consecutive identical probe results within a timeout.

Istio propagates config asynchronously, so right after an apply a probe may still see the old policy. We
never "retry until it passes": every observation is kept, the settled result is the first run of
`required` identical ones, and anything different seen before it is reported as a transient (an early
plaintext success after STRICT was applied is a finding, not noise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ConvergencePolicy:
    required: int = 3  # consecutive identical results that count as settled
    timeout_s: float = 60.0  # from the apply to giving up
    interval_s: float = 1.0  # between the starts of two probes
    settle_s: float = 1.0  # results before this (since the apply) never count towards the streak
    # istiod's push and the sidecars' ACK (cluster/kube/xds_sync.py), before the probes: istiod's debounce
    # (PILOT_DEBOUNCE_MAX 10 s) plus the push itself
    sync_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.required < 1:
            raise ValueError(f"required={self.required}: allowed: 1 or more")
        if self.timeout_s <= 0 or self.interval_s < 0 or self.settle_s < 0:
            raise ValueError("timeout_s must be > 0; interval_s and settle_s >= 0")


@dataclass
class Observation:
    at_s: float  # since the apply
    key: Hashable
    result: Any


@dataclass
class Convergence:
    converged: bool
    attempts: int
    elapsed_s: float
    settled_key: Hashable | None  # the key of the settled streak
    settled_result: Any  # the last result of that streak
    observations: list[Observation] = field(default_factory=list)

    @property
    def transients(self) -> list[Observation]:
        """What was seen before (or instead of) the settled result, in order."""
        return [o for o in self.observations if not self.converged or o.key != self.settled_key]

    @property
    def flapped(self) -> bool:
        """The result went back to an earlier one (A -> B -> A), which propagation alone does not explain."""
        runs = [k for i, k in enumerate(o.key for o in self.observations)
                if i == 0 or k != self.observations[i - 1].key]
        return len(runs) != len(set(runs))

    def summary(self) -> dict[str, Any]:
        return {"converged": self.converged, "attempts": self.attempts, "elapsed_s": round(self.elapsed_s, 3),
                "settled": repr(self.settled_key), "flapped": self.flapped,
                "sequence": [[round(o.at_s, 3), repr(o.key)] for o in self.observations]}


def converge(probe: Callable[[], Any], key: Callable[[Any], Hashable], policy: ConvergencePolicy,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> Convergence:
    """Probe until `policy.required` consecutive results (after settle_s) share one key, or time runs out.

    `clock` and `sleep` are parameters so the logic is tested with a virtual clock."""
    start = clock()
    observations: list[Observation] = []
    streak = 0
    while True:
        began = clock()
        result = probe()
        at = clock() - start
        observation = Observation(at, key(result), result)
        counted = began - start >= policy.settle_s
        if counted and streak and observation.key == observations[-1].key:
            streak += 1
        else:
            streak = 1 if counted else 0
        observations.append(observation)
        if streak >= policy.required:
            return Convergence(True, len(observations), at, observation.key, result, observations)
        if at + policy.interval_s > policy.timeout_s:
            last = observations[-1]
            return Convergence(False, len(observations), at, None, last.result, observations)
        sleep(max(0.0, policy.interval_s - (clock() - began)))
