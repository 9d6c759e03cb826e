"""What one run of the CLI produced."""

from __future__ import annotations

import re
from dataclasses import dataclass

_EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d  #(\d+)  ")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def event_sequences(self) -> list[int]:
        """The sequence numbers of the progress lines on stdout, in the order printed."""
        return [int(m.group(1)) for line in self.lines if (m := _EVENT_LINE.match(line))]
