"""Loopback addresses for pods: each pod gets its own 127.x.y.z, so endpoints read like pod IPs.

Linux routes all of 127.0.0.0/8 to the loopback interface, so any address there can be bound without setup.
Each mesh takes a /16 of its own (`127.<b>.0.0`, with <b> chosen at random and checked free), so two meshes on
one machine never share an address; pods get consecutive addresses from 127.<b>.0.2 on.
"""

from __future__ import annotations

import errno
import random
import socket
import sys

from meshlib.errors import MeshlibError

PROBE_PORT = 15000  # Envoy's admin port: if it is taken on the block's first address, another mesh has the block


def _free(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, PROBE_PORT))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


class LoopbackNetwork:
    """Hands out pod addresses in this mesh's own loopback block."""

    def __init__(self, rng: random.Random | None = None) -> None:
        if not sys.platform.startswith("linux"):
            raise MeshlibError(f"the embedded mesh gives each pod its own 127.x.y.z address, which {sys.platform} "
                               "does not route to loopback; run it on Linux (or in a Linux container)")
        self._next = 2
        self._block = self._choose(rng or random.Random())

    @staticmethod
    def _choose(rng: random.Random) -> str:
        candidates = list(range(16, 250))
        rng.shuffle(candidates)
        for b in candidates[:40]:
            if _free(f"127.{b}.0.2"):
                return f"127.{b}"
        raise MeshlibError("no free loopback block for the mesh's pods (127.16–249.x.x all in use?); "
                           "stop other meshes with `meshlib down`")

    def allocate(self) -> str:
        """A new pod address (never reused within this mesh, so a late packet cannot reach the wrong pod)."""
        n = self._next
        self._next += 1
        if n >= 65_000:
            raise MeshlibError("this mesh started more than 65,000 pods; restart it")
        return f"{self._block}.{n // 250}.{n % 250 + 2}" if n >= 250 else f"{self._block}.0.{n}"
