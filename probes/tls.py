"""What a passive observer learns from one direction of a TLS stream.

Records are walked by hand (a 5-byte header each); the cleartext handshake messages are dissected with
scapy's TLS layer (ClientHello: SNI, ALPN, offered versions; ServerHello: negotiated version and cipher).
Certificates travel in the clear only up to TLS 1.2; their URI SANs (SPIFFE IDs) are read with
`cryptography`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from scapy.config import conf
from scapy.layers.tls.crypto.suites import _tls_cipher_suites
from scapy.layers.tls.extensions import (
    TLS_Ext_ALPN,
    TLS_Ext_ServerName,
    TLS_Ext_SupportedVersion_CH,
    TLS_Ext_SupportedVersion_SH,
)
from scapy.layers.tls.handshake import TLSClientHello, TLSServerHello

conf.tls_session_enable = False  # dissect messages one by one; there are no keys to track

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
_RECORD_TYPES = {CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA}
_MAX_RECORD = 2**14 + 2048  # RFC 8446 5.2: the largest ciphertext a record may carry
CLIENT_HELLO, SERVER_HELLO, CERTIFICATE, CERTIFICATE_REQUEST = 1, 2, 11, 13
# A ServerHello with this random is a TLS 1.3 HelloRetryRequest (RFC 8446 4.1.3).
_HELLO_RETRY_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()
VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


def version_name(code: int) -> str:
    return VERSION_NAMES.get(code, f"0x{code:04x}")


def starts_like_tls(data: bytes) -> bool:
    """A TLS record header: a known content type, major version 3, a length a record may have."""
    return (len(data) >= 5 and data[0] in _RECORD_TYPES and data[1] == 3 and data[2] <= 4
            and 0 < int.from_bytes(data[3:5], "big") <= _MAX_RECORD)


def record_chain_start(data: bytes) -> int | None:
    """Where whole TLS records start in a stream captured from its middle: the first offset from which valid
    record headers chain to the end of `data` (the last record may be cut). None when there is none."""
    for start in range(min(len(data), _MAX_RECORD + 5)):
        if data[start] not in _RECORD_TYPES:
            continue
        offset, records = start, 0
        while offset + 5 <= len(data) and starts_like_tls(data[offset:offset + 5]):
            offset += 5 + int.from_bytes(data[offset + 3:offset + 5], "big")
            records += 1
        # One record that ends exactly at the end, or two or more (a random match rarely chains twice).
        if (records >= 2 and offset >= len(data)) or (records == 1 and offset == len(data)):
            return start
    return None


@dataclass
class TlsDirection:
    records: dict[str, int] = field(default_factory=dict)  # count per record type
    tls_bytes: int = 0  # bytes that walked as whole records
    truncated: bool = False  # the last record was cut by the end of the capture (or a hole)
    trailing: bytes = b""  # bytes after the last record that are not TLS at all
    client_hello: dict | None = None  # {"sni", "alpn", "offered_versions"}
    server_hello: dict | None = None  # {"version", "cipher"}
    hello_retry: bool = False
    certificates: list[dict] = field(default_factory=list)  # cleartext Certificate messages
    certificate_request: bool = False  # a TLS 1.2 server asked for a client certificate
    handshake_errors: list[str] = field(default_factory=list)


def negotiated_tls13(server_data: bytes) -> bool:
    """Whether the server's first handshake message (always cleartext) picked TLS 1.3."""
    direction = walk(server_data, tls13=False, stop_after_first_handshake=True)
    return bool(direction.server_hello and direction.server_hello["version"] == "TLSv1.3")


def walk(data: bytes, tls13: bool, stop_after_first_handshake: bool = False) -> TlsDirection:
    """Walk the records of one direction. With TLS 1.2 the handshake is encrypted after ChangeCipherSpec;
    with TLS 1.3 every handshake record is cleartext (the encrypted handshake travels as application data)."""
    result = TlsDirection()
    offset, encrypted, pending = 0, False, b""
    while offset < len(data):
        header = data[offset:offset + 5]
        if len(header) < 5 and header[0] in _RECORD_TYPES and header[1:2] in (b"", b"\x03"):
            result.truncated = True  # a record header cut by the end of what was captured
            break
        if not starts_like_tls(header):
            result.trailing = data[offset:]
            break
        kind, length = header[0], int.from_bytes(header[3:5], "big")
        if offset + 5 + length > len(data):
            result.truncated = True
            break
        fragment = data[offset + 5:offset + 5 + length]
        offset += 5 + length
        result.tls_bytes = offset
        name = {CHANGE_CIPHER_SPEC: "change_cipher_spec", ALERT: "alert", HANDSHAKE: "handshake",
                APPLICATION_DATA: "application_data"}[kind]
        result.records[name] = result.records.get(name, 0) + 1
        if kind == CHANGE_CIPHER_SPEC and not tls13:
            encrypted = True
        if kind != HANDSHAKE or encrypted:
            continue
        pending += fragment
        while len(pending) >= 4 and len(pending) >= 4 + int.from_bytes(pending[1:4], "big"):
            size = 4 + int.from_bytes(pending[1:4], "big")
            _handshake_message(pending[:size], result)
            pending = pending[size:]
            if stop_after_first_handshake:
                return result
    return result


def _handshake_message(message: bytes, result: TlsDirection) -> None:
    kind = message[0]
    try:
        if kind == CLIENT_HELLO and result.client_hello is None:
            result.client_hello = _client_hello(message)
        elif kind == SERVER_HELLO:
            if message[6:38] == _HELLO_RETRY_RANDOM:
                result.hello_retry = True
            else:
                result.server_hello = _server_hello(message)
        elif kind == CERTIFICATE:
            result.certificates.append(_certificate(message))
        elif kind == CERTIFICATE_REQUEST:
            result.certificate_request = True
    except Exception as err:  # noqa: BLE001 - a malformed message is an observation, not a crash
        result.handshake_errors.append(f"handshake type {kind}: {type(err).__name__}: {err}")


def _client_hello(message: bytes) -> dict:
    hello = TLSClientHello(message)
    sni, alpn, versions = None, [], [hello.version]
    for ext in hello.ext or []:
        if isinstance(ext, TLS_Ext_ServerName):
            names = [entry.servername for entry in ext.servernames or [] if entry.nametype == 0]
            sni = names[0].decode("ascii", "replace") if names else None
        elif isinstance(ext, TLS_Ext_ALPN):
            alpn = [entry.protocol.decode("ascii", "replace") for entry in ext.protocols or []]
        elif isinstance(ext, TLS_Ext_SupportedVersion_CH):
            versions = list(ext.versions or [])
    return {"sni": sni, "alpn": alpn,
            "offered_versions": [version_name(v) for v in versions if (v & 0x0F0F) != 0x0A0A]}  # no GREASE


def _server_hello(message: bytes) -> dict:
    hello = TLSServerHello(message)
    version = hello.version
    for ext in hello.ext or []:
        if isinstance(ext, TLS_Ext_SupportedVersion_SH):
            version = ext.version
    return {"version": version_name(version),
            "cipher": _tls_cipher_suites.get(hello.cipher, f"0x{hello.cipher:04x}")}


def _certificate(message: bytes) -> dict:
    """A TLS 1.2 Certificate message: a 3-byte list length, then 3-byte-length-prefixed DER certificates."""
    body, chain, offset = message[4:], [], 3
    end = 3 + int.from_bytes(body[:3], "big")
    while offset + 3 <= min(end, len(body)):
        size = int.from_bytes(body[offset:offset + 3], "big")
        der = body[offset + 3:offset + 3 + size]
        offset += 3 + size
        cert = x509.load_der_x509_certificate(der)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        chain.append({"subject": cert.subject.rfc4514_string(), "uris": uris})
    return {"chain": chain}
