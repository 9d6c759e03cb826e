"""The one table `python -m bench` prints, and the JSON file it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.common import Row

HEADERS = ("#", "figure", "value", "unit", "goal", "x baseline", "meets")


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _ratio(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.2f}x"


def table(rows: list[Row]) -> str:
    cells = [
        (
            r.figure,
            r.name,
            _num(r.value),
            r.unit,
            r.goal or "-",
            _ratio(r.ratio),
            {True: "yes", False: "NO", None: "-"}[r.meets_goal],
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(HEADERS)
    ]
    right = {2, 5}

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)
        ).rstrip()

    out = [line(HEADERS), line(tuple("-" * w for w in widths))]
    out += [line(c) for c in cells]
    notes = [f"  [{r.figure}] {r.name}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
