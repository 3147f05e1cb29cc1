"""meshproof: chaos and conformance tests for Istio east-west mTLS."""

__version__ = "0.1.0"
