"""meshlib: release-safety acceptance tests for a service mesh.

Installed as the distribution `meshlib-bdd` (`meshlib` on PyPI is an unrelated 3-D mesh library).
"""

__version__ = "0.1.0"  # the one place the release is written: pyproject.toml reads it (dynamic version)
