"""When the reference mesh's control plane pushes a change: debounced, as istiod does.

istiod does not push a config event at once. It waits until no further event came for PILOT_DEBOUNCE_AFTER
(100 ms by default), or until PILOT_DEBOUNCE_MAX (10 s) passed since the first event of the burst, then pushes
everything that changed in one go (istio/istio pilot/pkg/features/tuning.go DebounceAfter/DebounceMax,
pilot/pkg/xds/discovery.go debounce). `--push-delay S` sets the quiet period to S seconds, so local runs meet
the propagation time of a cluster; 0 (the default) pushes at once.

Callers are synchronous: `deliver` returns once its own change has been pushed (or raises what the push
raised). Changes made by other threads during the quiet period join the same push.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEBOUNCE_MAX_S = 10.0  # PILOT_DEBOUNCE_MAX's default


@dataclass
class _Burst:
    """Changes waiting for one push: {key: change}, the first and the latest arrival."""

    first: float
    last: float
    changes: dict[Any, Any] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    errors: dict[Any, BaseException] = field(default_factory=dict)


class Debouncer:
    """Holds changes until the control plane would push them, then hands each to `push(key, change)`."""

    def __init__(self, push: Callable[[Any, Any], None], after_s: float = 0.0, max_s: float = DEBOUNCE_MAX_S):
        if not after_s >= 0:
            raise ValueError(f"push delay {after_s!r} s: allowed 0 or more seconds")
        self.push, self.after_s, self.max_s = push, after_s, max(max_s, after_s)
        self._lock = threading.Condition()
        self._burst: _Burst | None = None

    def deliver(self, key: Any, change: Any) -> None:
        """Queue `change` (the whole desired state of `key`: a later change to the same key replaces it) and
        return once it has been pushed."""
        if self.after_s == 0:
            self.push(key, change)
            return
        with self._lock:
            now = time.monotonic()
            if self._burst is None:
                self._burst = _Burst(now, now)
            burst = self._burst
            burst.last = now
            burst.changes[key] = change
            self._lock.notify_all()  # a waiter restarts its quiet period
            mine = False
            while self._burst is burst:
                due = min(burst.last + self.after_s, burst.first + self.max_s)
                if time.monotonic() >= due:
                    # Exactly one waiter pushes the burst; later changes start a new one meanwhile.
                    self._burst, mine = None, True
                    break
                self._lock.wait(due - time.monotonic())
        if mine:
            self._flush(burst)
        burst.done.wait()
        if key in burst.errors:
            raise burst.errors[key]

    def _flush(self, burst: _Burst) -> None:
        try:
            for key, change in burst.changes.items():
                try:
                    self.push(key, change)
                except BaseException as err:  # noqa: BLE001 - reported to the caller whose change it was
                    burst.errors[key] = err
        finally:
            burst.done.set()
