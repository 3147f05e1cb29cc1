"""Errors of the wire proof."""


class CaptureError(Exception):
    """The harness could not observe the probe (no packets, the probe's flow missed, a broken sniffer or
    pcap). Never a pass and never a verdict about the mesh."""
