"""The local reference mesh: network namespaces as pods, real Envoy sidecars, a small Istio-API control plane.
A reference implementation of Istio's API for testing, not Istio."""
