"""Framework-neutral step functions: each takes a World and typed arguments."""

from importlib.util import find_spec

from meshlib.errors import MissingExtra

# The checks' own packages (statistics, JSONPath) come with the front ends' extras, not with the `meshlib` command's
# base install; found, not imported (scipy loads when a check first needs it, meshlib.stats).
for _module in ("numpy", "scipy", "jsonpath_ng"):
    if find_spec(_module) is None:
        raise MissingExtra("meshlib.dsl (the checks)", _module, "pytest", "behave")
