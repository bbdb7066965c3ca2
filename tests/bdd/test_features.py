"""Every scenario of features/ under pytest-bdd, on the same step functions as under behave (see conftest.py)."""

from pytest_bdd import scenarios

scenarios("../../features")
