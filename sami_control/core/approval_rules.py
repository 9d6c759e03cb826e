"""What a deployment waiting for approval says, and until when it waits (core/approvals.py
changes its state; core/deployments.py creates it; authz.py says who may approve)."""

from __future__ import annotations

import datetime

from sami_control.core.model import Deployment


def approvers_text(d: Deployment) -> str:
    """`alice or admin`, or who may approve when the manifest names nobody."""
    names = d.manifest_settings.approvers
    if names:
        return " or ".join(names)
    return f"anyone who may deploy to {d.service}/{d.environment} but {d.created_by}"


def expires_at(d: Deployment) -> float:
    return d.created_at + d.manifest_settings.approval_expires


def clock_text(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def awaiting_message(d: Deployment) -> str:
    """What `get` and `watch` say of a deployment waiting for approval."""
    return (
        f"awaiting approval by {approvers_text(d)} until {clock_text(expires_at(d))}: "
        f"`sami approve {d.id}` or `sami reject {d.id} --reason …`"
    )
