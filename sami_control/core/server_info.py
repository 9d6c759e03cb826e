"""What this control plane is: its version and its store (ServerService.GetServerInfo,
shown by `sami version` next to the client's)."""

from __future__ import annotations

from dataclasses import dataclass

from sami_common.version import VERSION
from sami_control.core import authz
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.model import Principal


@dataclass(frozen=True)
class Info:
    version: str
    store: str


class ServerInfo:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def get(self, who: Principal) -> Info:
        # Any token that may read may know what it talks to; an anonymous caller may not
        # (a version helps an attacker pick an exploit).
        authz.require(who, Action.READ)
        return Info(version=VERSION, store=self.ctx.store.kind)
