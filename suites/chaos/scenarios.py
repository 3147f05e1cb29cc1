"""The chaos scenarios. Each deploys its workloads, runs traffic through one fault, and returns what the
detectors found; suites/chaos/test_chaos.py reports them, tests/test_chaos_mutants.py runs them against
broken faults and meshes to show they go red.

Every scenario talks only to MeshBackend (deploy, apply, probe, teardown) and cluster.faults.Faults, so it
runs on any mesh target with a Faults implementation. Expectations come from the oracle (suites.expectations)
for the policy in force, never from what the mesh did; a phase boundary (fault injected, healed, policy
applied) gets a phase of its own where both the old and the new behaviour are allowed, but never plaintext
where policy says mTLS.
"""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from cluster.backend import ApplyRefused
from meshproof.scenario import scenario_from_dict
from reports.categories import HARNESS_ERROR, PLAINTEXT_LEAK, UNEXPECTED_OUTCOME
from suites.cells import pa, scenario
from suites.chaos import checks
from suites.chaos.checks import FAIL_CLOSED, Expect
from suites.chaos.report import OUT, figures_of
from suites.chaos.traffic import Traffic, retransmissions
from suites.expectations import expect

BEFORE_S, FAULT_S, AFTER_S = 0.4, 0.7, 0.4
RECOVERY_BOUND_S = 5.0  # after a heal (a sidecar restart, no push), the first answer must come within this
# Beyond the mesh's own push time: the probe in flight when the change lands, and a loaded 2-core machine.
CONVERGE_SLACK_S = 3.0
TRANSIENT = frozenset({"mtls", "503", "reset"})  # while a fault comes or goes: answered or refused, never clear


@dataclass
class Result:
    name: str
    traffic: Traffic
    problems: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


def converge_bound_s(mesh) -> float:
    """How long after an apply starts a probe may still see the old policy: the mesh's push time (measured
    or configured, MeshBackend.push_time_s) plus slack. Read before the change it bounds, so a slow push
    cannot widen its own bound."""
    return round(mesh.push_time_s() + CONVERGE_SLACK_S, 3)


def window_s(mesh, applies: int, waits: int) -> float:
    """A traffic window for `applies` applies (each within the convergence bound) and `waits` fixed phases,
    with room to spare: the window bounds a hung scenario, it never cuts a healthy one short."""
    return round(2 * (applies * converge_bound_s(mesh) + waits * max(BEFORE_S, FAULT_S, AFTER_S)) + 5, 1)


def predict(mode: str, client_sidecar: bool = True) -> Expect:
    """What the oracle says a request gets under PeerAuthentication `mode` in the server namespace."""
    prediction = expect(scenario_from_dict(scenario([pa(mode)], client_sidecar=client_sidecar), "chaos"))
    return Expect.of(prediction.outcome, encrypt=prediction.wire == "mtls")


def either(*expects: Expect) -> Expect:
    """A phase boundary: any outcome either side allows; encrypted only if both sides demand it."""
    return Expect(frozenset().union(*(e.outcomes for e in expects)), all(e.encrypt for e in expects))


def transient(base: Expect) -> Expect:
    return Expect(base.outcomes | TRANSIENT, base.encrypt)


@contextmanager
def deployed(mesh, mode: str, client_sidecar: bool = True) -> Iterator:
    kind = "sidecar" if client_sidecar else "no-sidecar"
    handle = mesh.deploy(scenario_from_dict(scenario([pa(mode)], client_sidecar=client_sidecar),
                                            f"chaos {kind} client, PeerAuthentication {mode}"))
    try:
        yield handle
    finally:
        mesh.teardown(handle)


def _out(name: str):
    return OUT / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@contextmanager
def under_traffic(mesh, faults, name: str, max_seconds: float, mode: str = "STRICT",
                  client_sidecar: bool = True) -> Iterator:
    """A deployed pair with its traffic loop running and past the `before` phase: yields (handle, traffic)."""
    client = "sidecar" if client_sidecar else "no-sidecar"
    with deployed(mesh, mode, client_sidecar) as handle, Traffic(mesh, faults, {client: handle}, _out(name),
                                                                 max_seconds=max_seconds) as traffic:
        traffic.mark("before")
        traffic.wait(BEFORE_S)
        yield handle, traffic


def evaluate(traffic: Traffic, expect_of: Callable) -> list[str]:
    """The checks every scenario runs: leaks, plaintext answers policy forbids, outcomes per phase."""
    for request in traffic.requests:
        rule = expect_of(request)
        request.leak = bool(rule and rule.encrypt and (request.canary_in_clear or request.wire == "plaintext"
                                                       or request.outcome == "plaintext"))
    problems = checks.leaks(traffic.requests, expect_of)
    for request in traffic.requests:
        rule = expect_of(request)
        if rule is not None and request.outcome == "plaintext" and "plaintext" not in rule.outcomes:
            request.leak = True
            problems.append(f"{PLAINTEXT_LEAK} the server answered in plaintext where policy forbids it: "
                            f"request {request.index} from {request.client} ({request.phase or 'spanning'})")
    # Includes a 200 whose flow the capture missed (traffic._settle), whatever the phase allows.
    problems += [f"{HARNESS_ERROR} request {r.index} from {r.client} ({r.phase or 'spanning'}): {r.failure_detail}"
                 for r in traffic.requests if r.outcome == "error"]
    return problems + checks.unexpected(traffic.requests, expect_of)


def _recover(traffic: Traffic, client: str = "sidecar") -> float | None:
    """After a heal: wait for the first answered request, then open the strict 'recovered' phase."""
    healed = traffic.phases[-1][0]
    traffic.wait_for(lambda rs: any(r.succeeded and r.started >= healed and r.client == client for r in rs),
                     RECOVERY_BOUND_S)
    traffic.mark("recovered")
    traffic.wait(AFTER_S)
    return checks.recovery_s(traffic.requests, healed, client)


def _recovery_problems(name: str, seconds: float | None) -> list[str]:
    if seconds is None or seconds > RECOVERY_BOUND_S:
        return [(f"{UNEXPECTED_OUTCOME} {name}: no answered request within {RECOVERY_BOUND_S} s of the heal "
                f"(first after {seconds} s)")]
    return []


# --- sidecar crash ---------------------------------------------------------------------------------------

def sidecar_crash(mesh, faults, role: str, mid_request: bool, client_sidecar: bool = True) -> Result:
    """SIGKILL of one sidecar, between requests or while a request (held 1 s at the server) is in flight.
    Expected: every request while it is down fails closed (503 or reset), nothing reaches the other side
    in clear or around the interception, and after the restart answers come back within the bound.
    With a sidecar-less client (PERMISSIVE server, plaintext allowed) it shows the interception holds:
    the dead sidecar's port refuses the client instead of letting it reach the app directly."""
    if role == "client" and not client_sidecar:
        raise ValueError("a client sidecar crash needs a client with a sidecar")
    client = "sidecar" if client_sidecar else "no-sidecar"
    name = (f"{role} sidecar crash {'mid-request' if mid_request else 'between requests'}"
            + ("" if client_sidecar else ", sidecar-less client"))
    mode = "STRICT" if client_sidecar else "PERMISSIVE"
    base = predict(mode, client_sidecar)
    fail_closed = FAIL_CLOSED if client_sidecar else Expect(FAIL_CLOSED.outcomes, encrypt=False)
    with under_traffic(mesh, faults, name, 20, mode, client_sidecar) as (handle, traffic):
        with faults.packet_delay(handle, 1000) if mid_request else nullcontext():
            if mid_request:
                traffic.mark("slowed")
                traffic.wait(0.4)  # the probe now in flight is held at the server for a second
            with traffic.fault(f"{role} sidecar killed", "down", "after"), faults.sidecar_killed(handle, role):
                traffic.wait(FAULT_S)
                traffic.mark("restarting")
        recover_s = _recover(traffic, client)
    rules = {"start": base, "before": base, "slowed": base, "down": fail_closed, "restarting": transient(base),
             "after": transient(base), "recovered": base, "end": base}
    problems = evaluate(traffic, lambda r: rules.get(r.phase, transient(base)))
    down = traffic.of(phase="down")
    problems += checks.needs_traffic(down, "while the sidecar was down", at_least=3)
    problems += [f"{UNEXPECTED_OUTCOME} interception bypass: request {r.index} put {r.wire} on the wire while "
                 f"the {role} sidecar was down" for r in down if r.wire != "none"]
    killed = traffic.windows[-1].started  # just before the signal
    in_flight = [r for r in traffic.requests if r.started < killed < r.ended]
    if mid_request:
        problems += checks.needs_traffic(in_flight, "in flight at the kill")
        problems += [f"{UNEXPECTED_OUTCOME} request {r.index} in flight at the kill was answered ({r.outcome})"
                     for r in in_flight if r.succeeded]
    problems += _recovery_problems(name, recover_s)
    figures = figures_of(traffic, problems, recover_s=recover_s, failed_while_down=sum(not r.succeeded for r in down),
                       in_flight_at_kill=[r.outcome for r in in_flight])
    return Result(name, traffic, problems, figures)


# --- control plane away ----------------------------------------------------------------------------------

def control_plane_away(mesh, faults) -> Result:
    """PERMISSIVE -> STRICT is applied, then the control plane stops and a change back to PERMISSIVE is tried.
    Expected: the sidecars keep serving STRICT while it is away. Where the mesh refuses changes then (Istio's
    validating webhook fails closed with istiod gone; Faults.refuses_applies_while_away), the change is refused
    and changes nothing, and once back a change takes effect within the convergence bound; where the run opened
    the webhook, the change is held and takes effect within the bound once the control plane is back. The
    sidecar client never speaks plaintext."""
    name = "control plane away"
    modes = {"before": "PERMISSIVE", "strict": "STRICT", "permissive": "PERMISSIVE"}
    rules = {phase: {c: predict(mode, c == "sidecar") for c in ("sidecar", "no-sidecar")}
             for phase, mode in modes.items()}
    must_refuse = faults.refuses_applies_while_away
    bound = converge_bound_s(mesh)
    refusal, problems = None, []
    with deployed(mesh, "PERMISSIVE") as side, deployed(mesh, "PERMISSIVE", client_sidecar=False) as plain, \
            Traffic(mesh, faults, {"sidecar": side, "no-sidecar": plain}, _out(name),
                    max_seconds=window_s(mesh, applies=4, waits=6)) as traffic:
        traffic.mark("before")
        traffic.wait(BEFORE_S)
        _apply_both(mesh, (side, plain), "STRICT", traffic, "strict")  # before it goes, as a cluster needs
        traffic.wait(BEFORE_S)
        with traffic.fault("control plane stopped", "away", "returned"), faults.control_plane_away():
            traffic.wait(BEFORE_S)
            try:
                for handle in (side, plain):
                    mesh.apply(handle, [pa("PERMISSIVE")])
            except ApplyRefused as err:
                refusal = str(err)
            traffic.mark("refused" if refusal else "changed while away")
            traffic.wait(max(FAULT_S, mesh.push_time_s()))  # long enough that a push would have shown
            traffic.mark("returning")
        traffic.wait(AFTER_S)
        # Refused: the change is made again now. Accepted: it was held and goes out since the return.
        changed = _apply_both(mesh, (side, plain), "PERMISSIVE", traffic, "permissive") if refusal \
            else traffic.phase_start("returned")
        traffic.wait(max(AFTER_S, bound if not refusal else 0))
    converge_s = checks.convergence_s(traffic.of("no-sidecar"), changed, rules["permissive"]["no-sidecar"].outcomes)

    def rule(r):
        old, held, new = (rules[phase][r.client] for phase in modes)
        changing = transient(either(held, new))
        phase_rules = {"start": old, "before": old, "applying strict": transient(either(old, held)), "strict": held,
                       "away": held, "refused": held, "changed while away": held,
                       # "returning" opens as the control plane starts again: a held change may go out in it.
                       "returning": held if refusal else changing, "returned": held if refusal else changing,
                       "applying permissive": changing,
                       "permissive": new, "end": new}
        return phase_rules.get(r.phase, transient(either(old, held, new)))

    if must_refuse and not refusal:
        problems.append(f"{UNEXPECTED_OUTCOME} the mesh accepted a change while the control plane was away (its "
                        "validating webhook fails closed)")
    if refusal and not must_refuse:
        problems.append(f"{UNEXPECTED_OUTCOME} the mesh refused a change while the control plane was away, though "
                        f"the run opened its webhook: {refusal}")
    problems += evaluate(traffic, rule)
    problems += checks.needs_traffic(traffic.of("no-sidecar", "refused" if refusal else "changed while away"),
                                     "from the sidecar-less client after the change was tried", at_least=3)
    problems += checks.slow_to_converge("the change after the control plane returned", converge_s, bound)
    return Result(name, traffic, problems, figures_of(traffic, problems, refusal=refusal, converge_bound_s=bound,
                                                       converge_after_return_s=converge_s))


def _apply_both(mesh, handles, mode: str, traffic: Traffic, phase: str) -> float:
    """Apply `mode` to every handle under phase `applying <phase>`, then open `phase`; returns when the
    applying started."""
    started = traffic.mark(f"applying {phase}")
    for handle in handles:
        mesh.apply(handle, [pa(mode)])
    traffic.mark(phase)
    return started


# --- policy flips ----------------------------------------------------------------------------------------

FLIPS = ("STRICT", "DISABLE", "STRICT")


def policy_flips(mesh, faults, apply: Callable | None = None) -> Result:
    """PERMISSIVE -> STRICT -> DISABLE -> STRICT under traffic from a sidecar and a sidecar-less client.
    Per flip and client: time to converge, the requests after the change that succeeded in a way the new
    mode forbids (propagation leak), flapping. `apply` replaces mesh.apply (mutation tests)."""
    name = "policy flips under traffic"
    apply = apply or mesh.apply
    clients = ("sidecar", "no-sidecar")
    modes = {"0:PERMISSIVE": "PERMISSIVE"} | {f"{i + 1}:{m}": m for i, m in enumerate(FLIPS)}
    rules = {label: {c: predict(mode, c == "sidecar") for c in clients} for label, mode in modes.items()}
    flips = []
    bound, window = converge_bound_s(mesh), window_s(mesh, applies=2 * len(FLIPS), waits=len(FLIPS) + 1)
    with deployed(mesh, "PERMISSIVE") as side, deployed(mesh, "PERMISSIVE", client_sidecar=False) as plain, \
            Traffic(mesh, faults, {"sidecar": side, "no-sidecar": plain}, _out(name), max_seconds=window) as traffic:
        traffic.mark("0:PERMISSIVE")
        traffic.wait(BEFORE_S)
        previous = "0:PERMISSIVE"
        for label in list(modes)[1:]:
            # Each client's change is timed from its own apply: the second waits for the first to return.
            started = {"sidecar": traffic.mark(f"applying {label}")}
            apply(side, [pa(modes[label])])
            started["no-sidecar"] = time.time()
            apply(plain, [pa(modes[label])])
            flips.append((previous, label, started, traffic.mark(label)))
            traffic.wait(0.5)
            previous = label
    problems, flip_figures = [], []
    for i, (old, new, began, applied) in enumerate(flips):
        until = flips[i + 1][2]["sidecar"] if i + 1 < len(flips) else None
        for client in clients:
            started, mine = began[client], traffic.of(client)
            wanted = rules[new][client].outcomes
            converge = checks.convergence_s(mine, started, wanted, until)
            leaked = checks.propagation_leaks(mine, started, wanted, until)
            settled = [r for r in mine if r.phase == new]
            flapped = checks.flaps([r for r in mine if r.started >= started and (until is None or r.ended < until)],
                                   wanted)
            refused = [r for r in mine if r.started >= started and r.ended < (until or float("inf"))
                       and not r.succeeded and not (rules[old][client].outcomes | wanted) & {"503", "reset"}]
            flip_figures.append({"flip": f"{modes[old]} -> {modes[new]}", "client": client, "converge_s": converge,
                                 "transient_refusals": [r.index for r in refused],
                                 "apply_returned_s": round(applied - started, 4),
                                 "propagation_leaks": [r.index for r in leaked], "flaps": flapped})
            problems += checks.slow_to_converge(f"{modes[old]} -> {modes[new]} for the {client} client", converge,
                                                bound)
            problems += checks.needs_traffic(settled, f"from the {client} client in {new}")
            if flapped:
                problems.append(f"{UNEXPECTED_OUTCOME} {modes[old]} -> {modes[new]} flapped {flapped} time(s) "
                                f"for the {client} client (pass -> fail -> pass)")

    def rule(r):
        # While a change propagates one sidecar may run the new config and its peer the old one: a refusal
        # is allowed then (and counted), plaintext only where the old or the new policy allows it.
        if r.phase in rules:
            return rules[r.phase][r.client]
        if r.phase and r.phase.startswith("applying "):
            label = r.phase.removeprefix("applying ")
            old = list(modes)[list(modes).index(label) - 1]
            return transient(either(rules[old][r.client], rules[label][r.client]))
        return transient(either(*(rules[label][r.client] for label in modes)))  # spanning, start, end

    problems = evaluate(traffic, rule) + problems
    figures = figures_of(traffic, problems, flips=flip_figures, converge_bound_s=bound,
                       propagation_leaks=sum(len(f["propagation_leaks"]) for f in flip_figures))
    return Result(name, traffic, problems, figures)


# --- certificates ----------------------------------------------------------------------------------------

def certificate_rotation(mesh, faults, rotations: int = 3) -> Result:
    """Both workloads get new certificates three times under traffic: no request may fail."""
    name = "certificate rotation under traffic"
    base = predict("STRICT")
    with under_traffic(mesh, faults, name, max_seconds=15) as (handle, traffic):
        served = [faults.serving_certificates(handle)]
        with traffic.fault("certificate rotations", "rotating", "after"):
            for _ in range(rotations):
                faults.rotate_certificates(handle)
                traffic.wait_for(lambda _: _all_changed(served[-1], faults.serving_certificates(handle)), 2.0)
                served.append(faults.serving_certificates(handle))
                traffic.wait(0.3)
        traffic.wait(AFTER_S)
    problems = evaluate(traffic, lambda r: base)
    problems += checks.needs_traffic(traffic.of(phase="rotating"), "during the rotations", at_least=5)
    problems += [f"{UNEXPECTED_OUTCOME} rotation {i + 1}: the {role} sidecar still serves certificate(s) "
                 f"{sorted(old[role])} after 2 s" for i, (old, new) in enumerate(itertools.pairwise(served))
                 for role in old if not old[role].isdisjoint(new.get(role, frozenset()))]
    figures = figures_of(traffic, problems, rotations=rotations,
                       serials=[{role: sorted(s) for role, s in step.items()} for step in served])
    return Result(name, traffic, problems, figures)


def _all_changed(before: dict, now: dict) -> bool:
    return all(before[role].isdisjoint(now.get(role, frozenset())) for role in before)


def certificate_expiry(mesh, faults, lifetime_s: float = 1.5) -> Result:
    """The server's certificate expires under traffic: requests fail closed until it is renewed."""
    name = "certificate expiry"
    base = predict("STRICT")
    with under_traffic(mesh, faults, name, max_seconds=20) as (handle, traffic):
        with traffic.fault("server certificate expires", "short-lived", "after"), \
                faults.certificate_expiring(handle, "server", lifetime_s) as expiry:
            traffic.wait(max(0.0, expiry - time.time() - 0.25))
            traffic.mark("expiring")
            traffic.wait(max(0.0, expiry - time.time() + 0.25))
            traffic.mark("expired")
            traffic.wait(FAULT_S)
            traffic.mark("renewing")
        recover_s = _recover(traffic)
    rules = {"start": base, "before": base, "short-lived": base, "expiring": either(base, FAIL_CLOSED),
             "expired": FAIL_CLOSED, "recovered": base, "end": base}
    problems = evaluate(traffic, lambda r: rules.get(r.phase, transient(base)))
    problems += checks.needs_traffic(traffic.of(phase="expired"), "after the expiry", at_least=3)
    problems += checks.needs_traffic(traffic.of(phase="short-lived"), "before the expiry", at_least=3)
    problems += _recovery_problems(name, recover_s)
    return Result(name, traffic, problems, figures_of(traffic, problems, recover_s=recover_s, lifetime_s=lifetime_s))


def untrusted_peer(mesh, faults) -> Result:
    """The client presents a certificate with its own SPIFFE ID from a CA the mesh does not trust: refused."""
    name = "untrusted CA peer"
    base = predict("STRICT")
    with under_traffic(mesh, faults, name, max_seconds=20) as (handle, traffic):
        with traffic.fault("client certificate from a rogue CA", "loading", "after"), \
                faults.rogue_peer(handle, "client"):
            loaded = traffic.phases[-1][0]
            # The sidecar reloads its secret from disk: the first refusal shows it is in use.
            traffic.wait_for(lambda rs: any(r.started >= loaded and not r.succeeded for r in rs), 2.0)
            traffic.mark("rogue")
            traffic.wait(FAULT_S)
            traffic.mark("restoring")
        recover_s = _recover(traffic)
    rules = {"start": base, "before": base, "loading": either(base, FAIL_CLOSED), "rogue": FAIL_CLOSED,
             "recovered": base, "end": base}
    problems = evaluate(traffic, lambda r: rules.get(r.phase, transient(base)))
    problems += checks.needs_traffic(traffic.of(phase="rogue"), "while the rogue certificate was in use", at_least=3)
    problems += _recovery_problems(name, recover_s)
    return Result(name, traffic, problems, figures_of(traffic, problems, recover_s=recover_s))


# --- network impairment ----------------------------------------------------------------------------------

IMPAIRMENTS = {
    # name: (what the fault does, seconds it lasts)
    "bandwidth": ("tbf 128kbit on both pods' egress", 1.2),
    "loss": ("30% of the packets into the server pod dropped", 2.0),
    "delay": ("every request held 300 ms at the server", 1.2),
    "partition": ("every packet between the pods dropped", 1.5),
}


def network_impairment(mesh, faults, kind: str) -> Result:
    """Traffic through one impairment. Expected: bandwidth and delay slow requests but all are answered
    in mTLS; loss leaves at least half answered; a partition answers nothing until it heals. Each also
    checks that the impairment had its effect, so a no-op fault cannot pass."""
    if kind not in IMPAIRMENTS:
        raise ValueError(f"impairment {kind!r}: allowed {', '.join(IMPAIRMENTS)}")
    what, seconds = IMPAIRMENTS[kind]
    name = f"network {kind}"
    base = predict("STRICT")
    inject = {"bandwidth": lambda h: faults.bandwidth_limited(h, "128kbit"),
              "loss": lambda h: faults.packet_loss(h, 0.3),
              "delay": lambda h: faults.packet_delay(h, 300),
              "partition": lambda h: faults.partitioned(h)}[kind]
    with under_traffic(mesh, faults, name, max_seconds=25) as (handle, traffic):
        with traffic.fault(what, "injecting", "after"), inject(handle):
            traffic.mark("impaired")
            traffic.wait(seconds)
            healing = traffic.mark("healing")
        recover_s = _recover(traffic) if kind == "partition" else None
    during = {"bandwidth": base, "delay": base, "loss": transient(base), "partition": FAIL_CLOSED}[kind]
    rules = {"start": base, "before": base, "impaired": during, "recovered": base, "end": base}
    if kind != "partition":
        rules["after"] = base
    problems = evaluate(traffic, lambda r: rules.get(r.phase, transient(base)))
    began = traffic.phase_start("impaired")
    started_impaired = [r for r in traffic.requests if began <= r.started < healing]
    # Loss and partition can hold the probe that meets them for seconds: count what was in flight.
    held = [r for r in traffic.requests if r.started < healing and r.ended > began + 0.1]
    judged = held if kind in ("loss", "partition") else started_impaired
    problems += checks.needs_traffic(judged, f"during the {kind}")
    before_ms = statistics.median(r.latency_ms for r in traffic.of(phase="before")) if traffic.of(phase="before") \
        else None
    latencies = [r.latency_ms for r in judged]
    # A loaded machine can make any probe slow but never makes a veth drop a segment: loss shows as resends
    # (also just after the heal, of segments dropped before it).
    resent = retransmissions(traffic.pcaps["sidecar"], began, healing + 1.0) if kind == "loss" else None
    effect = {
        # 128 kbit/s puts ~0.2 s on a handshake plus answer; a loaded machine alone adds tens of ms.
        "bandwidth": bool(latencies) and before_ms is not None
        and statistics.median(latencies) > max(3 * before_ms, before_ms + 100),
        "delay": bool(latencies) and min(latencies) >= 300,
        "loss": bool(resent),
        "partition": all(r.ended >= healing for r in judged if r.succeeded),
    }[kind]
    if not effect:
        problems.append(f"{UNEXPECTED_OUTCOME} the {kind} had no effect on the requests during it "
                        f"(latency ms before: median {before_ms}, during: {[round(x) for x in latencies][:20]}"
                        + (f"; segments resent: {resent})" if kind == "loss" else ")"))
    if kind == "loss":
        answered = sum(r.succeeded for r in held)
        if answered < len(held) / 2:
            problems.append(f"{UNEXPECTED_OUTCOME} only {answered} of {len(held)} requests answered at 30% loss")
    if kind == "partition":
        problems += _recovery_problems(name, recover_s)
    figures = figures_of(traffic, problems, impairment=what, recover_s=recover_s, latency_ms_before=before_ms,
                       latency_ms_impaired=statistics.median(latencies) if latencies else None,
                       segments_resent=resent)
    return Result(name, traffic, problems, figures)


