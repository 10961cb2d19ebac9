"""Budgets and spend of the embedded store survive a reopen."""

from __future__ import annotations

from proxy.state.sqlite import StateDB


def test_round_trip(tmp_path):
    db = StateDB(str(tmp_path / "state.db"))
    db.set_budget("a", 5.0)
    db.set_budget("b", 0.0)
    db.save_spend({"a": 1.25, "c": 0.5})
    db.save_spend({"a": 2.5})
    db.close()
    again = StateDB(str(tmp_path / "state.db"))
    assert again.budgets() == {"a": 5.0, "b": 0.0}
    assert again.spend() == {"a": 2.5, "c": 0.5}
    again.set_budget("a", None)
    assert again.budgets() == {"b": 0.0}
    again.close()
