"""The few collaborators every service of the core is built from (core/controlplane.py
wires them): the store, the clock, the settings, the after-commit publisher and the audit
log. Services that need another service take it as a constructor argument."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sami_control.core.audit import Audit
from sami_control.core.effects import Publisher
from sami_control.core.settings import Settings
from sami_control.core.store import Store

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Context:
    store: Store
    clock: Clock
    settings: Settings
    publisher: Publisher
    audit: Audit
