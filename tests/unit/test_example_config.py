"""examples/floodguard.toml is complete and true: every key of the config, each with a comment
and floodguard's own default, and it loads with floodguard's config loader.

The optional tables ([[gateway]], [[feed]], [vos3000]) are shown commented out; they are
uncommented here and must load too, with every key of their own and the defaults.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from floodguard import config as configmod

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "floodguard.toml"
# "# [[gateway]]", "# [vos3000]": a commented-out table
COMMENTED_TABLE = re.compile(r"^# (\[\[?\w+\]\]?)$")
ASSIGNMENT = re.compile(r"^(\w+) = ")


def commented_tables(text: str) -> dict[str, str]:
    """Each commented-out table of the example, uncommented: its header -> its TOML text."""
    tables: dict[str, str] = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = COMMENTED_TABLE.match(line)
        if match is None:
            continue
        body = [match[1]]
        for following in lines[index + 1:]:
            if not following.startswith("# "):
                break
            body.append(following[2:])
        tables[match[1]] = "\n".join(body) + "\n"
    return tables


def config_keys(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_example_loads_with_every_default() -> None:
    """It loads, and the effective config is exactly the built-in one."""
    cfg = configmod.load(EXAMPLE)
    assert configmod.dumps(cfg) == configmod.dumps(configmod.Config())


def test_example_sets_every_key_of_every_section() -> None:
    """Every key of every section is written out (a missing one would load as its default and
    go unnoticed), and nothing else."""
    raw = tomllib.loads(EXAMPLE.read_text())
    assert set(raw) == set(configmod._SECTIONS)
    for section, cls in configmod._SECTIONS.items():
        assert set(raw[section]) == config_keys(cls), section


def test_every_key_has_a_comment() -> None:
    """Each key line, commented-out tables included, follows a comment saying what it does."""
    text = EXAMPLE.read_text()
    lines = text.splitlines()
    for table in commented_tables(text).values():
        lines += ["", *table.splitlines()]
    bare = [line for previous, line in zip(["", *lines], lines, strict=False)
            if ASSIGNMENT.match(line) and not previous.startswith("#")]
    assert not bare, bare


def test_commented_tables_load_with_every_key_and_default() -> None:
    """The commented [[gateway]], [[feed]] and [vos3000] examples, uncommented, load; they show
    every key of their tables, and the optional keys and the VOS3000 values are the defaults
    (a VOS3000 value unlike its key's default would conflict with it and fail to load)."""
    text = EXAMPLE.read_text()
    tables = commented_tables(text)
    assert set(tables) == {"[[gateway]]", "[[feed]]", "[vos3000]"}, set(tables)
    cfg = configmod.loads(text + "\n" + "\n".join(tables.values()))
    arrays = {"[[gateway]]": (configmod.GatewayConfig, cfg.gateways, ("name", "sources")),
              "[[feed]]": (configmod.FeedConfig, cfg.feeds, ("name", "source"))}
    for header, (cls, entries, required) in arrays.items():
        raw = tomllib.loads(tables[header])[header.strip("[]")][0]
        assert set(raw) == config_keys(cls), header
        (entry,) = entries
        default = cls()
        for key in config_keys(cls) - set(required):
            assert getattr(entry, key) == getattr(default, key), (header, key)
    aliases = tomllib.loads(tables["[vos3000]"])["vos3000"]
    assert set(aliases) == set(configmod.VOS3000_ALIASES)
    assert configmod.dumps(dataclasses.replace(cfg, gateways=(), feeds=())) \
        == configmod.dumps(configmod.Config())
