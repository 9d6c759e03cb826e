"""A logical dump of the control plane's database, to prove a refused request wrote nothing.

The copy is made with SQLite's online backup API (consistent while the server writes), then
dumped as SQL. The audit table is left out: it records refusals, by design."""

from __future__ import annotations

import sqlite3
from pathlib import Path

EXCLUDED_TABLES = ("audit",)


def logical_dump(data_dir: Path) -> list[str]:
    src = sqlite3.connect(data_dir / "sami.db")
    copy = sqlite3.connect(":memory:")
    try:
        src.backup(copy)
        lines = []
        for line in copy.iterdump():
            if any(f'"{t}"' in line.split("VALUES")[0] for t in EXCLUDED_TABLES):
                continue
            if line.startswith('INSERT INTO "sqlite_sequence"') and any(
                f"'{t}'" in line for t in EXCLUDED_TABLES
            ):
                continue
            lines.append(line)
        return lines
    finally:
        copy.close()
        src.close()
