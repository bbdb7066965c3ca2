"""Analysis gates: what `meshlib analyze` would report for everything applied so far."""

from __future__ import annotations

from meshlib.config.analyze import ERROR, analyze
from meshlib.dsl.world import World
from meshlib.expect import fail


def no_errors(world: World) -> None:
    findings = analyze(world.backend.store)
    world.attach("analysis", "\n".join(map(str, findings)) or "no findings")
    errors = [f for f in findings if f.level == ERROR]
    if errors:
        raise fail("no analysis errors", f"{len(errors)} found", "\n".join(f"  {e}" for e in errors))
