"""Sami's version: the one place it is written. pyproject.toml reads it from here
(`[tool.setuptools.dynamic]`), and the agent sends it in Hello without looking up
package metadata at run time (importlib.metadata costs an idle agent about 2 MB)."""

VERSION = "0.1.0"
