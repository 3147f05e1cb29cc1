"""Support for the self-tests and the benchmark, kept out of the product packages (probes, cluster, suites).

- `rig`: a throwaway two-namespace rig with real TCP/TLS endpoints (the wire-proof self-tests, the benchmark);
- `probe_bench` (`python -m testsupport.probe_bench`): what the wire proof adds per probe, as JSON.
"""
