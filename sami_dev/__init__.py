"""Tools for developing Sami, used by the tests, the benchmarks and the demo: never shipped.

pyproject.toml leaves this package out of the wheel (`pip install sami` has no sami_dev), so
no shipped package may import it (tests/test_boundaries.py checks). Run from the repository
root, where it is importable: `python -m sami_dev.devswarm up ROOT`.
"""
