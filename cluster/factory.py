"""Choose a mesh backend from the command line / pytest options: `local` (the reference mesh) or `kube`.

`args` needs .mesh and, for kube, .kubeconfig and .context. The kube modules are imported only when asked
for, so the local mesh works without a cluster client configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from cluster.backend import MeshBackend
from cluster.checks import Check


def make_backend(args) -> MeshBackend:
    push_delay = getattr(args, "push_delay", 0.0) or 0.0
    if args.mesh == "local":
        from cluster.local.backend import LocalBackend

        return LocalBackend(push_delay_s=push_delay)
    if push_delay:
        raise ValueError(f"push delay {push_delay} s: only the local mesh takes one (a cluster has its own)")
    if args.mesh == "kube":
        from cluster.kube.backend import KubeBackend

        return KubeBackend.from_options(args)
    raise ValueError(f"unknown mesh {args.mesh!r}; allowed: local, kube")


@contextmanager
def started(backend: MeshBackend) -> Iterator[MeshBackend]:
    """`backend` started, and stopped on the way out whatever happens (stop() is safe after a partial start)."""
    try:
        backend.start()
        yield backend
    finally:
        backend.stop()


def open_backend(args) -> AbstractContextManager[MeshBackend]:
    """The backend `args` name, started and always stopped (see started())."""
    return started(make_backend(args))


def clean_leftovers(args) -> list[str]:
    """Remove what crashed runs left behind; returns one line per object removed."""
    if args.mesh == "local":
        from cluster.local.lifecycle import clean_leftovers as clean_local

        return clean_local()
    from cluster.kube.backend import clean_leftovers as clean_kube

    return clean_kube(kubeconfig=getattr(args, "kubeconfig", None), context=getattr(args, "context", None))


def run_doctor(args) -> list[Check]:
    if args.mesh == "local":
        from cluster.local.doctor import checks

        return checks()
    from cluster.kube.doctor import checks as kube_checks

    return kube_checks(kubeconfig=getattr(args, "kubeconfig", None), context=getattr(args, "context", None))
