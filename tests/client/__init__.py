"""Tests of sami_client: the typed client and the `sami` CLI, against a fake control plane."""
