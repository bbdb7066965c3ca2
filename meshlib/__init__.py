"""meshlib: release-safety acceptance tests for a service mesh."""

__version__ = "0.1.0"
