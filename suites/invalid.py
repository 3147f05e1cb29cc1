"""Manifests Istio's validating webhook (or its CRD schema) refuses, with the field the error must name.

Source: istio/istio pkg/config/validation/validation.go (ValidatePeerAuthentication, ValidateDestinationRule,
validateTLS, validateExportTo) and the enum types in istio/api security/v1 and networking/v1.
"""

from __future__ import annotations


def _pa(spec: dict, namespace: str = "httpbin") -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "bad", "namespace": namespace}, "spec": spec}


def _dr(tls: dict, namespace: str = "sleep") -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "bad", "namespace": namespace},
            "spec": {"host": "httpbin.httpbin.svc.cluster.local", "trafficPolicy": {"tls": tls}}}


# (id, manifest, the field path the error must name)
INVALID_MANIFESTS: list[tuple[str, dict, str]] = [
    ("pa-unknown-mode", _pa({"mtls": {"mode": "STRICTER"}}), "spec.mtls.mode"),
    ("pa-port-level-without-selector", _pa({"portLevelMtls": {8080: {"mode": "DISABLE"}}}), "spec.portLevelMtls"),
    ("pa-port-zero", _pa({"selector": {"matchLabels": {"app": "httpbin"}}, "portLevelMtls": {0: {"mode": "STRICT"}}}),
     "spec.portLevelMtls[0]"),
    ("pa-typo-field", _pa({"mtsl": {"mode": "STRICT"}}), "spec.mtsl"),
    ("dr-unknown-tls-mode", _dr({"mode": "ISTIO_MTLS"}), "spec.trafficPolicy.tls.mode"),
    ("dr-mutual-without-cert", _dr({"mode": "MUTUAL"}), "spec.trafficPolicy.tls.clientCertificate"),
    ("dr-credential-and-files", _dr({"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/x.pem"}),
     "spec.trafficPolicy.tls.credentialName"),
    ("unknown-kind", {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicyX",
                      "metadata": {"name": "x", "namespace": "httpbin"}, "spec": {}}, "kind"),
    ("missing-namespace", {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                           "metadata": {"name": "x"}, "spec": {}}, "metadata.namespace"),
]
