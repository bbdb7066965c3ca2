"""Ports meshlib picks for the processes it starts stay out of the kernel's ephemeral range, where any outgoing
connection could take one between the check and the bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from meshlib.local import process
from meshlib.local.process import LOWEST_PORT, ephemeral_low, free_port


@pytest.mark.skipif(ephemeral_low() is None, reason="the ephemeral port range is read from Linux's /proc")
def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    low = ephemeral_low()
    assert low is not None
    ports = {free_port() for _ in range(50)}
    assert all(LOWEST_PORT <= p < low for p in ports), sorted(ports)
    assert len(ports) > 40  # chosen at random, not handed out in sequence
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        (tmp_path / "range").write_text(f"{taken + 1000}\t60999\n")
        monkeypatch.setattr(process, "EPHEMERAL_RANGE", tmp_path / "range")
        monkeypatch.setattr(process, "LOWEST_PORT", taken)
        draws = iter([0, 7])  # the first draw is the busy port
        monkeypatch.setattr(process.secrets, "randbelow", lambda _n: next(draws))
        assert free_port() == taken + 7


def test_without_the_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(process, "EPHEMERAL_RANGE", tmp_path / "missing")
    assert ephemeral_low() is None
    assert free_port() > 0
