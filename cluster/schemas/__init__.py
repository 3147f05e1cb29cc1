"""Pinned upstream schemas (Kubernetes API definitions, Istio CRDs) and a validator over them."""
