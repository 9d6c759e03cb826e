"""Variables of a service in an environment (`sami var`, docs/secrets.md): values that are
not secret, stored and shown plainly, that fill `${NAME}` in the stack files when the agent
deploys. A deployment records the values of its service/environment when it is created
(core/secrets.py `record`), so that a rollback reproduces what it went back to."""

from __future__ import annotations

import re

from sami_control.core import authz, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import InvalidArgument, NotFound
from sami_control.core.model import Principal, Variable

# As compose names variables.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# A value fills a place in a stack file: a line, not a document.
MAX_VALUE = 4096


def variable_name(field: str, value: str) -> str:
    if not _VARIABLE_NAME.fullmatch(value):
        raise InvalidArgument(
            field,
            f"variable name {value[:80]!r} must be a letter or '_' then letters, digits or "
            "'_' (at most 128), as in ${NAME}",
        )
    return value


def _subject(
    self: Variables, who: Principal, service: str, environment: str, name: str, *_: object
) -> Subject:
    return Subject(who, f"{service}/{environment}/{name[:128]}", service)


class Variables:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    def _check(
        self, who: Principal, service: str, environment: str, name: str
    ) -> tuple[str, str, str]:
        service = validation.name("service", service, "service name")
        env = validation.environment("environment", environment)
        name = variable_name("name", name)
        authz.require_secrets_scope(who, service, env)
        return service, env, name

    @audited("var.set", _subject)
    async def set(
        self, who: Principal, service: str, environment: str, name: str, value: str
    ) -> Variable:
        service, env, name = self._check(who, service, environment, name)
        validation.text("value", value, limit=MAX_VALUE)
        v = Variable(service, env, name, value, set_by=who.name, set_at=self.ctx.clock())
        async with self.ctx.store.tx() as tx:
            await tx.put_variable(v)
            await self.audit.ok(
                tx, who, "var.set", f"{service}/{env}/{name}", detail=value, service=service
            )
        return v

    @audited("var.remove", _subject)
    async def remove(self, who: Principal, service: str, environment: str, name: str) -> Variable:
        service, env, name = self._check(who, service, environment, name)
        async with self.ctx.store.tx() as tx:
            known = next((v for v in await tx.list_variables(service, env) if v.name == name), None)
            if known is None:
                raise NotFound(
                    f"variable {name} of {service} in {env} is not set "
                    f"(`sami var list {service} --env {env}`)"
                )
            await tx.delete_variable(service, env, name)
            await self.audit.ok(
                tx,
                who,
                "var.remove",
                f"{service}/{env}/{name}",
                detail=known.value,
                service=service,
            )
        return known

    async def list(self, who: Principal, service: str, environment: str) -> list[Variable]:
        """Variables (values included: they are not secret) the caller's scope covers."""
        authz.require(who, Action.READ)
        if service:
            validation.name("service", service, "service name")
        if environment:
            validation.environment("environment", environment)
        async with self.ctx.store.tx() as tx:
            rows = await tx.list_variables(service, environment)
        return [v for v in rows if authz.in_scope(who, v.service, v.environment)]
