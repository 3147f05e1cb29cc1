"""Detectors over the requests of a chaos window: leaks, fail-open, flapping, convergence, recovery.

Pure functions of suites.chaos.traffic.Request lists, so each can be shown to go red on made-up requests
(tests/test_chaos_checks.py) as well as on a broken mesh. Problems are one line each and start with a
reports/categories.py prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reports.categories import PLAINTEXT_LEAK, PROPAGATION_TIMEOUT, UNEXPECTED_OUTCOME

SUCCESS = ("mtls", "plaintext")


@dataclass(frozen=True)
class Expect:
    """What policy allows for a request: the outcomes it may have, and whether it must be encrypted."""

    outcomes: frozenset[str]
    encrypt: bool  # the client's sidecar must send mTLS: its canary may never be readable on the wire

    @classmethod
    def of(cls, *outcomes: str, encrypt: bool) -> Expect:
        return cls(frozenset(outcomes), encrypt)


FAIL_CLOSED = Expect.of("503", "reset", encrypt=True)  # a broken mTLS path: no answer, and nothing readable


def _line(request) -> str:
    return (f"request {request.index} from {request.client} ({request.phase or 'spanning'}): "
            f"{request.outcome} (http {request.http_status}, curl {request.curl_exit}, wire {request.wire}"
            f"{', canary in clear' if request.canary_in_clear else ''})")


def leaks(requests: Iterable, expect_of: Callable) -> list[str]:
    """Requests whose policy says mTLS but whose canary, or a 200 answer in clear, crossed the wire readable."""
    problems = []
    for request in requests:
        expect = expect_of(request)
        if expect is None or not expect.encrypt:
            continue
        if request.canary_in_clear:
            problems.append(f"{PLAINTEXT_LEAK} canary in cleartext where policy says mTLS: {_line(request)}")
        elif request.wire == "plaintext" or request.outcome == "plaintext":
            problems.append(f"{PLAINTEXT_LEAK} plaintext flow where policy says mTLS: {_line(request)}")
    return problems


def unexpected(requests: Iterable, expect_of: Callable) -> list[str]:
    """Requests whose outcome policy does not allow in their phase (a fail-open, or a missing answer)."""
    problems = []
    for request in requests:
        expect = expect_of(request)
        if expect is not None and request.outcome not in expect.outcomes:
            allowed = ", ".join(sorted(expect.outcomes))
            problems.append(f"{UNEXPECTED_OUTCOME} allowed {allowed}, got {_line(request)}")
    return problems


def first_success_after(requests: Iterable, when: float, client: str | None = None):
    """The first request started at or after `when` that got a 200 (None if none did)."""
    return next((r for r in sorted(requests, key=lambda r: r.started)
                 if r.started >= when and r.succeeded and (client is None or r.client == client)), None)


def recovery_s(requests: Iterable, when: float, client: str | None = None) -> float | None:
    """Seconds from `when` (the heal) until the first answered request after it completed."""
    first = first_success_after(requests, when, client)
    return None if first is None else round(first.ended - when, 4)


def convergence_s(requests: list, flip: float, wanted: frozenset[str], until: float | None = None) -> float | None:
    """Seconds from `flip` until the end of the first request after which every request up to `until` has a
    wanted outcome; None when the phase never settled."""
    after = sorted(_between(requests, flip, until), key=lambda r: r.started)
    for i, request in enumerate(after):
        if all(r.outcome in wanted for r in after[i:]):
            return round(request.ended - flip, 4)
    return None


def propagation_leaks(requests: Iterable, flip: float, wanted: frozenset[str], until: float | None = None) -> list:
    """Requests started after a policy change that still succeeded in a way the new policy forbids."""
    return [r for r in _between(requests, flip, until) if r.succeeded and r.outcome not in wanted]


def _between(requests: Iterable, start: float, until: float | None) -> list:
    """Requests wholly inside [start, until): one that spans the next change belongs to neither side."""
    return [r for r in requests if r.started >= start and (until is None or r.ended < until)]


def flaps(requests: list, wanted: frozenset[str]) -> int:
    """How often the outcome went back from wanted to unwanted and then to wanted again (pass -> fail -> pass)."""
    states = [r.outcome in wanted for r in sorted(requests, key=lambda r: r.started)]
    count, seen_pass, failed_after_pass = 0, False, False
    for ok in states:
        if ok and failed_after_pass:
            count += 1
            failed_after_pass = False
        elif not ok and seen_pass:
            failed_after_pass = True
        seen_pass |= ok
    return count


def needs_traffic(requests: list, what: str, at_least: int = 1) -> list[str]:
    """A check over no requests proves nothing: name the phase that saw too few."""
    if len(requests) >= at_least:
        return []
    return [f"{UNEXPECTED_OUTCOME} only {len(requests)} request(s) {what}; at least {at_least} needed to judge it"]


def slow_to_converge(name: str, seconds: float | None, bound_s: float) -> list[str]:
    if seconds is None:
        return [f"{PROPAGATION_TIMEOUT} {name}: never converged within the window"]
    if seconds > bound_s:
        return [f"{PROPAGATION_TIMEOUT} {name}: converged after {seconds:.3f} s (bound {bound_s} s)"]
    return []
