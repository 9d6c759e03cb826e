"""Durable state behind one interface: SQLite by default (sqlite.py); PostgreSQL later."""

from sami_control.storage.base import Conflict, StorageFailed, Store, Tx

__all__ = ["Conflict", "StorageFailed", "Store", "Tx"]
