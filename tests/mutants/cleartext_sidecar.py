"""Mutant: a client sidecar that is told to originate Istio mTLS but forwards in cleartext."""

from cluster.local import controlplane


def _cleartext(client, sni, sans, *alpn):
    return {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
        "@type": f"{controlplane.TYPE}extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}


controlplane._istio_mutual = _cleartext
