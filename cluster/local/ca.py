"""The reference mesh's private CA: an EC P-256 root and short-lived workload certificates with SPIFFE IDs.

Leaf certificates look like istiod's: empty subject, one critical URI SAN, server+client auth. They reach a
sidecar as file-based SDS secrets `default` and `ROOTCA` (atomically replaced), so a rotation needs no
restart. A second, untrusted "rogue" CA issues certificates with the same SPIFFE IDs for chaos cells.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.local.lifecycle import shared_folder

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
LEAF_TTL = datetime.timedelta(hours=1)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class MeshCA:
    def __init__(self, name: str = "meshproof reference mesh CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.root_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> MeshCA:
        """An existing CA (a cluster's mesh CA, read from its secret) that issues like this one."""
        ca = cls.__new__(cls)
        ca.cert = x509.load_pem_x509_certificate(cert_pem)
        ca.key = serialization.load_pem_private_key(key_pem, password=None)
        ca.root_pem = cert_pem
        return ca

    def issue(self, spiffe_id: str, ttl: datetime.timedelta = LEAF_TTL) -> tuple[bytes, bytes]:
        """(certificate chain PEM, private key PEM) for one workload identity; a negative ttl issues one that
        has already expired."""
        return _leaf(spiffe_id, self.cert.subject, self.key, ttl)


def self_signed(spiffe_id: str) -> tuple[bytes, bytes]:
    """A workload-shaped certificate signed by its own key: no CA vouches for it."""
    return _leaf(spiffe_id, None, None, LEAF_TTL)


def app_server_certificate(dns_name: str) -> tuple[bytes, bytes]:
    """An app's own TLS certificate (the https app), self-signed for `dns_name`: no mesh identity, no CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _leaf(spiffe_id: str, issuer: x509.Name | None, issuer_key, ttl: datetime.timedelta) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    if issuer is None:
        issuer, issuer_key = x509.Name([]), key
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + ttl)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _atomic_write(path: Path, data: bytes, mode: int = 0o644, uid: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    if uid is not None:
        os.chown(tmp, uid, uid)
    os.replace(tmp, path)


def install_identity(cert_dir: Path, sds_dir: Path, ca: MeshCA, spiffe_id: str, proxy_uid: int,
                     trust: MeshCA | None = None) -> None:
    """Write a workload's cert files (the paths MUTUAL DestinationRules point at) and its SDS secrets.

    `ca` signs the workload certificate; `trust` (default: the same CA) is the root the sidecar trusts.
    Writing again rotates: the sidecar picks up the new secrets from the watched SDS directory.
    """
    chain, key = ca.issue(spiffe_id)
    root = (trust or ca).root_pem
    shared_folder(cert_dir)
    shared_folder(sds_dir)
    _atomic_write(cert_dir / "cert-chain.pem", chain)
    _atomic_write(cert_dir / "key.pem", key, mode=0o600, uid=proxy_uid)
    _atomic_write(cert_dir / "root-cert.pem", root)
    default = {"name": "default", "tls_certificate": {"certificate_chain": {"inline_bytes": _b64(chain)},
                                                       "private_key": {"inline_bytes": _b64(key)}}}
    rootca = {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_bytes": _b64(root)}}}
    version = datetime.datetime.now(datetime.UTC).isoformat()
    for name, secret in (("default", default), ("ROOTCA", rootca)):
        response = {"version_info": version, "resources": [{"@type": SECRET_TYPE, **secret}]}
        _atomic_write(sds_dir / f"{name}.json", json.dumps(response).encode(), mode=0o600, uid=proxy_uid)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
