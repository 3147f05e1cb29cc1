"""Conformance and chaos suites, and the oracle of Istio semantics they check against."""
