"""Budgets and spend of the embedded store survive a reopen; processes sharing a file see each
other's commits."""

from __future__ import annotations

from proxy.state.sqlite import ProviderRows, StateDB


def test_round_trip(tmp_path):
    db = StateDB(str(tmp_path / "state.db"))
    db.set_budget("a", 5.0)
    db.set_budget("b", 0.0)
    db.add_spend({"a": 1.25, "c": 0.5})
    db.add_spend({"a": 2.5})
    db.close()
    again = StateDB(str(tmp_path / "state.db"))
    assert again.budgets() == {"a": 5.0, "b": 0.0}
    assert again.spend() == {"a": 3.75, "c": 0.5}
    again.set_spend("a", 0.25)
    assert again.spend() == {"a": 0.25, "c": 0.5}
    again.set_budget("a", None)
    assert again.budgets() == {"b": 0.0}
    again.close()


def test_two_workers_add_their_spend_to_one_total(tmp_path):
    one, two = StateDB(str(tmp_path / "s.db")), StateDB(str(tmp_path / "s.db"))
    one.add_spend({"k": 1.0})
    two.add_spend({"k": 0.5})
    one.add_spend({"k": 0.25})
    assert one.spend() == two.spend() == {"k": 1.75}
    one.close()
    two.close()


def test_a_file_tells_when_another_connection_committed_never_for_its_own(tmp_path):
    path = str(tmp_path / "r.db")
    mine, theirs = ProviderRows(path), ProviderRows(path)
    assert not mine.changed_elsewhere()
    mine.put([("a", b"{}", None)])
    mine.delete("a")
    assert not mine.changed_elsewhere()
    assert theirs.changed_elsewhere()
    assert not theirs.changed_elsewhere()  # asked again: nothing new
    theirs.put([("b", b"{}", None)])
    assert mine.changed_elsewhere() and mine.rows() == [(b"{}", None)]
    mine.close()
    theirs.close()
