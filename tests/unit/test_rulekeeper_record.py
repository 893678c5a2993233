"""The rule keeper's record of the last ``floodguard apply`` / ``remove`` (a real state store);
the keeper itself runs against the real kernel in tests/integration/test_coexistence.py."""

import dataclasses

from floodguard.config import load, loads
from floodguard.rulekeeper import RECORD, Record, record, recorded, saved_entries
from floodguard.store import Store


def test_apply_and_remove_are_recorded_and_junk_is_no_record(tmp_path):
    path = tmp_path / "floodguard.toml"
    path.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[limits]\nregister_burst = 12\n'
                    '[fleet]\nredis_url = "redis://:s3cret@10.0.0.5:6379/0"\n')
    cfg = load(path)
    assert recorded(Store(cfg.state.path)) is None  # a store from before the record
    # the config as written, not as the admission controller lowered it for this apply
    admitted = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, queue_budget=5))
    assert record(admitted, "legacy") is None
    last = recorded(Store(cfg.state.path))
    assert last is not None and (last.applied, last.backend) == (True, "legacy")
    assert last.cfg is not None and last.cfg.limits == cfg.limits
    assert last.cfg.fleet.redis_url == ""  # no password in the record
    assert "s3cret" not in str(Store(cfg.state.path).load_snapshot(RECORD))
    assert record(cfg, None) is None
    assert recorded(Store(cfg.state.path)) == Record(False)
    store = Store(cfg.state.path)
    for junk in ([1], {"applied": "yes"}, {"applied": True, "backend": "iptables; rm -rf /"}):
        store.save_snapshot(RECORD, junk)
        assert recorded(store) is None
    # a config this version cannot read: the keeper renders the guard's file instead
    store.save_snapshot(RECORD, {"applied": True, "backend": "nft", "config": "[x]\ny = 1\n"})
    assert recorded(store) == Record(True, "nft", None)


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


def test_remove_without_a_store_creates_none(tmp_path):
    cfg = loads(f'[state]\npath = "{tmp_path / "s.db"}"\n')
    assert record(cfg, None) is None and not (tmp_path / "s.db").exists()
