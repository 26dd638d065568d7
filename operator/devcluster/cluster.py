"""The embedded cluster as one object: control plane + process kubelet + our CRDs and RBAC roles installed.

The pytest fixture, ``make cluster-up`` and the demo all use :class:`Cluster`, so they run the same code.
"""

from __future__ import annotations

from pathlib import Path

from .controlplane import REPO, ControlPlane
from .kubelet import ProcessKubelet

MANIFESTS = (REPO / "crds", REPO / "manifests" / "rbac", REPO / "manifests" / "peering")


class Cluster:
    def __init__(self, directory: Path | None = None, manifests: tuple[Path, ...] = MANIFESTS) -> None:
        self.plane = ControlPlane(directory)
        self.kubelet = ProcessKubelet(self.plane)
        self.manifests = manifests

    def start(self) -> Cluster:
        self.plane.start()
        try:
            self.kubelet.start()
            self.plane.install(*[m for m in self.manifests if m.exists()])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.kubelet.stop()
        self.plane.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
