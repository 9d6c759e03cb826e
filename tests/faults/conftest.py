"""The fault tests reuse the end-to-end stack (tests/e2e/conftest.py)."""

from tests.e2e.conftest import stack  # noqa: F401
