"""Chaos suites: the mesh must fail closed and leak nothing while things break.

Layout (one job per module):
- scenarios.py: the scenarios (sidecar crash, control plane away, policy flips, certificate rotation,
  expiry and a rogue CA, network bandwidth/loss/delay/partition); each returns requests, problems, figures.
- traffic.py: the bounded probe loop (N probes or T seconds) with one pcap per client over the whole window;
  every flow is judged by probes.verdict and given to the probe it belongs to; canaries are searched in clear.
- checks.py: the detectors (leak, outcome per phase, recovery, convergence, propagation leak, flapping).
- report.py: Allure suite "chaos", timeline PNG (reports/timeline.py), window pcaps, figures.json.
- test_chaos.py: one test per scenario. tests/test_chaos_mutants.py runs the same scenarios against broken
  faults or meshes and asserts each detector goes red.

Faults come from `mesh.faults()` (cluster/faults.py); the scenarios use nothing else of the backend than
MeshBackend's deploy/apply/probe/teardown. Run: `make chaos` (about 40 s on the reference mesh); the
artefacts of the last run are also kept under reports/out/chaos/<scenario>/.
"""
