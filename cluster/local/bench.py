"""Timings of the reference mesh on this machine: `python -m cluster.local.bench` prints one JSON object.

pair_start_ms: a new sleep+httpbin pair with two sidecars, from nothing to serving (netns, iptables, certs,
  Envoys ready with their config, httpbin listening); goal < 300 ms.
probe_ms: one sleep -> httpbin request through both sidecars with mTLS (and with a wire capture); goal < 20 ms.
policy_change_ms: apply() of a change that touches both sidecars until both report the new version; goal < 50 ms.
memory_per_pair_mb / _pss_mb: resident memory of every process in a pair's two pods (RSS, and PSS which
  shares pages between processes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from cluster.local.backend import LocalBackend
from meshproof.scenario import scenario_from_dict

GOALS = {"pair_start_ms": 300, "probe_ms": 20, "policy_change_ms": 50}


def _manifests(pa_mode: str, dr_mode: str) -> list[dict]:
    return [
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": "bar"}, "spec": {"mtls": {"mode": pa_mode}}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "httpbin", "namespace": "foo"},
         "spec": {"host": "httpbin.bar.svc.cluster.local", "trafficPolicy": {"tls": {"mode": dr_mode}}}},
    ]


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered), 1), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "max": round(ordered[-1], 1), "n": len(ordered)}


def _pair_memory_mb(pair) -> tuple[float, float]:
    """(RSS, PSS) summed over every process in the pair's pods. RSS counts the shared Envoy binary and
    Python libraries once per process; PSS shares them out."""
    rss = pss = 0
    for pod in pair.pods():
        pids = subprocess.run(["ip", "netns", "pids", pod.name], check=False, capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            try:
                info = psutil.Process(int(pid)).memory_full_info()
            except psutil.NoSuchProcess:
                continue
            rss, pss = rss + info.rss, pss + info.pss
    return rss / 2**20, pss / 2**20


def run_bench(pairs: int = 4, probes: int = 40, changes: int = 20) -> dict:
    backend = LocalBackend(out_dir=tempfile.mkdtemp(prefix="meshproof-bench-"))
    backend.start()
    try:
        starts, handles = [], []
        for i in range(pairs):  # distinct namespaces: every pair is a cold start
            scn = scenario_from_dict({"client": {"namespace": f"c{i}"}, "server": {"namespace": "bar"},
                                      "resources": _manifests("STRICT", "ISTIO_MUTUAL")}, source="bench")
            started = time.perf_counter()
            handles.append(backend.deploy(scn))
            starts.append((time.perf_counter() - started) * 1000)
        handle = handles[0]
        # Policy docs name the client namespace foo; rewrite to the pair's namespace c0.
        def docs(pa, dr):
            out = _manifests(pa, dr)
            out[1]["metadata"]["namespace"] = "c0"
            return out
        backend.apply(handle, docs("STRICT", "ISTIO_MUTUAL"))
        plain, captured = [], []
        for _ in range(probes):
            result = backend.probe(handle, capture=False)
            assert result.outcome == "mtls", result.to_json()
            plain.append(result.elapsed_ms)
        for _ in range(max(probes // 4, 5)):
            result = backend.probe(handle, capture=True)
            captured.append(result.elapsed_ms)
        flips, states = [], [("STRICT", "ISTIO_MUTUAL"), ("PERMISSIVE", "DISABLE")]
        for i in range(changes):
            started = time.perf_counter()
            backend.apply(handle, docs(*states[(i + 1) % 2]))
            flips.append((time.perf_counter() - started) * 1000)
        expected = "mtls" if changes % 2 == 0 else "plaintext"
        after = backend.probe(handle, capture=False).outcome
        memory = [_pair_memory_mb(h.pair) for h in handles]
        result = {
            "pair_start_ms": _summary(starts),
            "probe_ms": _summary(plain),
            "probe_with_capture_ms": _summary(captured),
            "policy_change_ms": _summary(flips),
            "policy_change_visible": after == expected,
            "memory_per_pair_mb": round(statistics.median(m[0] for m in memory), 1),
            "memory_per_pair_pss_mb": round(statistics.median(m[1] for m in memory), 1),
            "goals_ms": GOALS,
            "cpus": psutil.cpu_count(),
        }
        result["meets_goals"] = all(result[k]["median"] < v for k, v in GOALS.items())
        return result
    finally:
        backend.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(run_bench(args.pairs, args.probes, args.changes), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
