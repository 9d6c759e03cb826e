"""The quarantine rule both the control plane and the CLI follow (sami_common/quarantine.py)."""

from __future__ import annotations

from sami_common.quarantine import Finished, Outcome, quarantined

OK, FAILED, BACK = Outcome.SUCCEEDED, Outcome.FAILED, Outcome.ROLLED_BACK


def q(*history: tuple[str, str, Outcome] | tuple[str, str, Outcome, str]) -> dict[str, str]:
    """Newest first: (id, digest, outcome[, rollback_of]) → {digest: quarantined by}."""
    return {d: x.by for d, x in quarantined(Finished(*h) for h in history).items()}


def test_a_rolled_back_digest_is_quarantined_by_that_deployment() -> None:
    assert q(("d3", "B", BACK), ("d2", "A", OK)) == {"B": "d3"}


def test_a_failed_one_is_not_it_may_never_have_run() -> None:
    assert q(("d3", "B", FAILED), ("d2", "A", OK)) == {}
    # Nor does a failure lift an earlier quarantine of the same digest.
    assert q(("d4", "B", FAILED), ("d3", "B", BACK), ("d2", "A", OK)) == {"B": "d3"}


def test_a_later_success_lifts_it_and_an_earlier_one_does_not() -> None:
    assert q(("d4", "B", OK), ("d3", "B", BACK)) == {}
    assert q(("d4", "B", BACK), ("d3", "B", OK)) == {"B": "d4"}


def test_a_rollback_quarantines_the_deploy_it_went_back_from() -> None:
    history = (("d4", "A", OK, "d1"), ("d3", "C", FAILED), ("d2", "B", OK), ("d1", "A", OK))
    assert q(*history) == {"B": "d4"}


def test_rolling_back_twice_quarantines_both_newer_digests() -> None:
    history = (("d5", "A", OK, "d1"), ("d4", "B", OK, "d2"), ("d3", "C", OK), ("d2", "B", OK))
    assert q(*history, ("d1", "A", OK)) == {"B": "d5", "C": "d4"}
