"""Mesh targets behind one interface: `local` (the reference mesh on this machine) and `kube` (real Istio)."""
