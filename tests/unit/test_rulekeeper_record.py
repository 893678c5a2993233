"""The rule keeper's record of the last ``floodguard apply`` / ``remove`` (a real state store);
the keeper itself runs against the real kernel in tests/integration/test_coexistence.py."""

from floodguard.config import loads
from floodguard.rulekeeper import RECORD, record, recorded, saved_entries
from floodguard.store import Store


def test_apply_and_remove_are_recorded_and_junk_is_no_record(tmp_path):
    cfg = loads(f'[state]\npath = "{tmp_path / "s.db"}"\n')
    assert recorded(Store(cfg.state.path)) is None  # a store from before the record
    assert record(cfg, "legacy") is None
    assert recorded(Store(cfg.state.path)) == (True, "legacy")
    assert record(cfg, None) is None
    assert recorded(Store(cfg.state.path)) == (False, None)
    store = Store(cfg.state.path)
    for junk in ([1], {"applied": "yes"}, {"applied": True, "backend": "iptables; rm -rf /"}):
        store.save_snapshot(RECORD, junk)
        assert recorded(store) is None


def test_a_record_that_cannot_be_written_is_a_warning_not_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    cfg = loads(f'[state]\npath = "{tmp_path / "file" / "s.db"}"\n')
    warning = record(cfg, "nft")
    assert warning is not None and "record was not written" in warning


def test_saved_entries_are_the_active_bans_and_known_sources(tmp_path):
    store = Store(tmp_path / "s.db")
    store.put_ban("192.0.2.1", "manual", "seen", 600, now=1000)
    store.put_ban("192.0.2.2", "manual", "old", 10, now=1000)
    store.put_known("198.51.100.1", 300, now=1000)
    assert saved_entries(store, now=1100) == [("192.0.2.1", "ban", 500.0),
                                              ("198.51.100.1", "known", 200.0)]
