"""External hosts on the embedded mesh: a stand-in the mesh config declares answers for its host, and a batch
that reached meshlib's echo instead says so in the run's notes (issue 10)."""

from __future__ import annotations

from pathlib import Path

from meshclient import SLEEP, behave_project, run_behave

FEATURE = """\
Feature: external hosts
  Scenario: the payments API answers through its stand-in
    Given the manifest "m.yaml" is applied
    When 4 requests are sent from sleep to http://api.payments.example.com/status/418
    Then every response has status 418

  Scenario: a host with no stand-in is answered by the echo
    Given the manifest "m.yaml" is applied
    When 3 requests are sent from sleep to http://ledger.example.com/entries
    Then every response has status 200
"""


def test_a_declared_stand_in_answers_and_the_echo_is_noted(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(SLEEP)
    (tmp_path / "meshlib.yaml").write_text("externalHosts:\n"
                                           "  api.payments.example.com: {image: kennethreitz/httpbin}\n")
    run = run_behave(behave_project(tmp_path, {"external.feature": FEATURE}), "-D", "mesh_config=meshlib.yaml")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "2 scenarios passed, 0 failed" in run.stdout, out[-4000:]
    assert ("mesh config meshlib.yaml: external host api.payments.example.com is answered by a stand-in running "
            "kennethreitz/httpbin") in run.stderr
    notes = [line for line in run.stderr.splitlines() if "echo stand-in" in line]
    assert len(notes) == 1, run.stderr[-4000:]
    assert "3 reached the external host ledger.example.com" in notes[0] and "externalHosts" in notes[0]
    assert "api.payments.example.com" not in notes[0]
