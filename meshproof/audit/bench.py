"""`make bench` section: prediction speed of `meshproof audit` on a generated mesh, 100,000 client x Service
port pairs against 1,000 policies (goal: at most 10 s on one core). Prints JSON.

The pairs are predicted in this one process (one core); cpu_s is its CPU time, which other load on the
machine does not inflate, wall_s the elapsed time, which it does."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from meshproof.audit import synthetic
from meshproof.audit.manifests import inventory_from_docs
from meshproof.audit.pairs import audit

GOAL = {"pairs": 100_000, "policies": 1_000, "cpu_s": 10.0}
SHAPE = {"namespaces": 20, "workloads_per_ns": 50, "services_per_ns": 5}  # 1,000 clients x 100 Service ports


def run() -> dict:
    docs = synthetic.generate(policies=GOAL["policies"], **SHAPE)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    inv = inventory_from_docs(docs)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    pairs, predictor = audit(inv)
    cpu2, wall2 = time.process_time(), time.perf_counter()
    cpu = cpu2 - cpu1
    return {"what": "meshproof audit: predictions of a generated mesh (meshproof/audit/synthetic.py)",
            "pairs": len(pairs), "policies": len(inv.resources), **SHAPE,
            "read_manifests_cpu_s": round(cpu1 - cpu0, 3), "predict_cpu_s": round(cpu, 3),
            "predict_wall_s": round(wall2 - wall1, 3), "read_manifests_wall_s": round(wall1 - wall0, 3),
            "pairs_per_cpu_s": round(len(pairs) / cpu) if cpu else None,
            "oracle_calls": predictor.oracle_calls, "statuses": dict(Counter(p.status for p in pairs)),
            "goal": GOAL,
            "goal_met": len(pairs) >= GOAL["pairs"] and len(inv.resources) >= GOAL["policies"]
            and cpu <= GOAL["cpu_s"]}


if __name__ == "__main__":
    json.dump(run(), sys.stdout, indent=1)
    print()
