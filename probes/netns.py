"""Enter a network namespace from the calling thread, to open sockets that live there.

A socket stays in the namespace it was created in, so a sniffer or a test server can be opened inside a
pod's namespace and then be used from any thread. `setns` on a network namespace affects only the calling
thread; Python 3.11 has no `os.setns`, so it is called through libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {what}: {os.strerror(err)}")


@contextlib.contextmanager
def entered(netns: str | None) -> Iterator[None]:
    """Run the block with this thread in `ip netns` namespace `netns` (None: stay where we are)."""
    if netns is None:
        yield
        return
    path = f"/var/run/netns/{netns}"
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ValueError(f"network namespace {netns!r} does not exist (no {path})") from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, f"network namespace {netns!r}")
        try:
            yield
        finally:
            if _libc.setns(own, _CLONE_NEWNET) != 0:
                # Carrying on would open every later socket of this thread in the wrong namespace.
                os.write(2, f"cannot return from network namespace {netns!r}; aborting\n".encode())
                os.abort()
    finally:
        os.close(target)
        os.close(own)
