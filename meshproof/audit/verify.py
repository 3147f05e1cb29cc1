"""`meshproof audit --verify`: each predicted pair's scenario deployed on the local reference mesh and probed
with a capture, its outcome and wire verdict compared with the audit's prediction as the conformance cells
are (suites/interpret.py `compare`).

Pairs whose scenario and client service account are the same share one deployment and one probe. The local
backend holds one pod pair in use and keeps at most one idle pair of the same shape for reuse
(cluster/local/backend.py MAX_IDLE_PAIRS), so a mesh of any size needs at most 4 pods at once: it costs
time, not memory."""

from __future__ import annotations

from dataclasses import dataclass, replace

from cluster.backend import MeshBackend, ProbeResult
from meshproof.audit.pairs import Pair, Predictor
from meshproof.scenario import NotSupportedYet
from suites.interpret import Verdict, compare

POD_BOUND = 4  # the pods --verify holds at once (see the module docstring)


@dataclass(frozen=True)
class Checked:
    pair: Pair
    observed: ProbeResult | None = None
    verdict: Verdict | None = None
    not_verifiable: str | None = None  # why the pair was not deployed

    @property
    def agrees(self) -> bool:
        return self.verdict is not None and self.verdict.passed

    @property
    def observed_wire(self) -> str | None:
        wire = self.observed.wire if self.observed else None
        return str(wire.verdict) if wire else None

    def to_json(self) -> dict:
        p = self.pair
        data = {"client": p.client.ref, "service": p.port.ref, "server": p.server.ref}
        if self.not_verifiable is not None:
            return {**data, "not_verifiable": self.not_verifiable}
        assert p.prediction is not None and self.observed is not None and self.verdict is not None
        return {**data, "agrees": self.agrees, "expected": {"outcome": str(p.prediction.outcome),
                                                            "wire": str(p.prediction.wire)},
                "observed": {"outcome": self.observed.outcome, "wire": self.observed_wire,
                             "pcap": self.observed.wire.pcap if self.observed.wire else None},
                "message": self.verdict.message}


def verify(pairs: list[Pair], predictor: Predictor, mesh: MeshBackend) -> list[Checked]:
    """One Checked per pair, in the pairs' order."""
    checked: dict[int, Checked] = {}
    groups: dict[tuple, list[int]] = {}
    for i, pair in enumerate(pairs):
        key = predictor.scenario_key(pair.client, pair.port, pair.server)
        if pair.prediction is None or isinstance(key, str) or key not in predictor.scenarios:
            checked[i] = Checked(pair, not_verifiable=pair.not_predicted or "the oracle has no prediction")
        else:
            groups.setdefault((key, pair.client.service_account), []).append(i)
    for (key, client_sa), members in groups.items():
        scenario = predictor.scenarios[key]
        # the oracle's client is a stand-in; deployed, it carries the real client's service account
        scenario = replace(scenario, client=replace(scenario.client, service_account=client_sa))
        try:
            handle = mesh.deploy(scenario)
        except NotSupportedYet as err:
            for i in members:
                checked[i] = Checked(pairs[i], not_verifiable=f"the reference mesh: {err.field_path} {err.problem}")
            continue
        try:
            names = mesh.run_namespaces(handle)
            result = mesh.probe(handle, capture=True)
        finally:
            mesh.teardown(handle)
        for i in members:
            checked[i] = Checked(pairs[i], result, compare(_in_run(pairs[i].prediction, names), result, captured=True))
    return [checked[i] for i in range(len(pairs))]


def _in_run(prediction, names):
    """The prediction in the run's names: the pods run in <namespace>-<run>, so do the identity the app sees
    and the SNI the client sidecar sends."""
    tls = prediction.tls
    if tls and tls.get("sni"):
        tls = {**tls, "sni": names.sni(tls["sni"])}
    return replace(prediction, peer_identity=names.identity(prediction.peer_identity), tls=tls)


def print_verified(checked: list[Checked], console) -> None:
    for c in checked:
        p = c.pair
        who = f"{p.client.ref} -> {p.port.ref} ({p.server.ref})"
        if c.not_verifiable is not None:
            console.print(f"[yellow]not verifiable yet[/] {who}: {c.not_verifiable}", highlight=False, soft_wrap=True)
            continue
        assert p.prediction is not None and c.observed is not None and c.verdict is not None
        said = (f"{who}: expected {p.prediction.outcome} (wire {p.prediction.wire}), observed {c.observed.outcome} "
                f"(wire {c.observed_wire})")
        if c.agrees:
            console.print(f"[green]agrees[/] {said}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[red]differs[/] {said}: {c.verdict.message}", highlight=False, soft_wrap=True)
    console.print(summary(checked), highlight=False, soft_wrap=True)


def summary(checked: list[Checked]) -> str:
    verified = [c for c in checked if c.not_verifiable is None]
    differ = [c for c in verified if not c.agrees]
    listed = f" ({', '.join(f'{c.pair.client.ref} -> {c.pair.port.ref}' for c in differ)})" if differ else ""
    return (f"{len(verified)} pairs verified: {len(verified) - len(differ)} agree, {len(differ)} differ{listed}, "
            f"{len(checked) - len(verified)} not verifiable")
