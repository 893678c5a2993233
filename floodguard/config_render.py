"""The effective config as TOML (``floodguard config show``), secrets redacted on request."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from floodguard.config import Config


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r}")


def section_lines(obj: Any) -> list[str]:
    return [f"{f.name} = {toml_value(getattr(obj, f.name))}" for f in fields(obj)]


def redact_url(url: str) -> str:
    """A URL with its password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def dumps(cfg: Config, *, redact: bool = False) -> str:
    """Render the effective config as TOML that ``loads`` reads back to an equal Config;
    ``redact`` hides secrets (the Redis password) for display."""
    if redact and cfg.fleet.redis_url:
        cfg = replace(cfg, fleet=replace(cfg.fleet, redis_url=redact_url(cfg.fleet.redis_url)))
    out: list[str] = []
    for section in fields(cfg):  # the tables, in Config's order; the arrays come after them
        value = getattr(cfg, section.name)
        if not is_dataclass(value):
            continue
        out.append(f"[{section.name}]")
        out.extend(section_lines(value))
        out.append("")
    for gw in cfg.gateways:
        out.append("[[gateway]]")
        out.extend(section_lines(gw))
        out.append("")
    for feed in cfg.feeds:
        out.append("[[feed]]")
        out.extend(section_lines(feed))
        out.append("")
    return "\n".join(out)
