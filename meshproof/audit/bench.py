"""`make bench` section: prediction speed of `meshproof audit` on a generated mesh, 100,000 client x Service
port pairs against 1,000 policies (goal: at most 10 s on one core). Prints JSON.

The pairs are predicted in this one process (one core); cpu_s is its CPU time, which other load on the
machine does not inflate, wall_s the elapsed time, which it does."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import replace

from meshproof import scenario as sc
from meshproof.audit import synthetic
from meshproof.audit.index import resolved_host
from meshproof.audit.inventory import Inventory
from meshproof.audit.manifests import inventory_from_docs
from meshproof.audit.pairs import Pair, audit, oracle_port_name, target_port
from meshproof.istio_api import DestinationRule
from suites.expectations import Prediction, expect

GOAL = {"pairs": 100_000, "policies": 1_000, "cpu_s": 10.0}
SHAPE = {"namespaces": 20, "workloads_per_ns": 50, "services_per_ns": 5}  # 1,000 clients x 100 Service ports
NAIVE_SAMPLE = 200  # pairs predicted without the index, to say what it saves


def naive_prediction(inv: Inventory, pair: Pair) -> Prediction:
    """The pair's scenario with every object and every label, nothing indexed or cached: the index's
    reference (tests/test_audit.py compares the two)."""
    fake = f"httpbin.{pair.port.namespace}.svc.cluster.local"
    resources = tuple(replace(r, host=fake) if isinstance(r, DestinationRule) and resolved_host(r) == pair.port.host
                      else r for r in inv.resources)
    client, server = pair.client, pair.server
    return expect(sc.Scenario(
        client=sc.Workload(client.namespace, bool(client.sidecar), client.labels, client.service_account),
        server=sc.Server(server.namespace, bool(server.sidecar), server.labels, server.service_account,
                         pair.port.port, target_port(pair.port, server) or 0, port_name=oracle_port_name(pair.port)),
        resources=resources, manifests=()))


def run() -> dict:
    docs = synthetic.generate(policies=int(GOAL["policies"]), **SHAPE)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    inv = inventory_from_docs(docs)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    pairs, predictor = audit(inv)
    cpu2, wall2 = time.process_time(), time.perf_counter()
    cpu = cpu2 - cpu1
    sample = [p for p in pairs if p.prediction is not None][:NAIVE_SAMPLE]
    for pair in sample:
        naive_prediction(inv, pair)
    naive_per_pair = (time.process_time() - cpu2) / len(sample)
    return {"what": "meshproof audit: predictions of a generated mesh (meshproof/audit/synthetic.py)",
            "pairs": len(pairs), "policies": len(inv.resources), **SHAPE,
            "read_manifests_cpu_s": round(cpu1 - cpu0, 3), "predict_cpu_s": round(cpu, 3),
            "predict_wall_s": round(wall2 - wall1, 3), "read_manifests_wall_s": round(wall1 - wall0, 3),
            "pairs_per_cpu_s": round(len(pairs) / cpu) if cpu else None,
            "oracle_calls": predictor.oracle_calls,
            "naive_cpu_s_estimate": round(naive_per_pair * len(pairs), 1),
            "naive_estimate_from": f"{len(sample)} pairs predicted with every policy and no cache, times {len(pairs)}", "statuses": dict(Counter(p.status for p in pairs)),
            "goal": GOAL,
            "goal_met": len(pairs) >= GOAL["pairs"] and len(inv.resources) >= GOAL["policies"]
            and cpu <= GOAL["cpu_s"]}


if __name__ == "__main__":
    json.dump(run(), sys.stdout, indent=1)
    print()
