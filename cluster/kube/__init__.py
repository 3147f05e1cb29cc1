"""The kube backend: any cluster with Istio installed, through the official kubernetes client."""
