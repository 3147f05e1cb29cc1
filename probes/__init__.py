"""Wire proof: packet capture and TLS/plaintext classification, backend-neutral (a pcap in, a verdict out)."""
