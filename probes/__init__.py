"""Wire proof: packet capture and TLS/plaintext classification, backend-neutral (a pcap in, a verdict out).

- `capture.Capture`: a sniffer on an interface (optionally inside a network namespace) around one probe;
  it stops as soon as the probe's flows have closed (or gone quiet) and writes the pcap.
- `verdict.judge`: pcap + canary (+ the server address) -> {"verdict": "mtls"|"app-tls"|"plaintext"|"none", ...};
  `CaptureError` when the capture cannot prove anything (no packets, the flow missed, frames dropped).
- `flows` (TCP reassembly), `tls` (record walk, hello dissection), `canary`, `identity` (XFCC URI from
  httpbin's /headers), `netns` (open sockets inside a namespace).
The self-tests' endpoints and the probe benchmark live in `testsupport/`.
"""
