"""Backends of the store interface the core declares (sami_control/core/store.py): SQLite
(sqlite.py), the default. A backend imports the core's data (core/model.py) and interface,
never its services."""
