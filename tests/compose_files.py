"""The compose files as Docker Compose reads them, without Docker: YAML with its merge keys, and an
override file (``-f a.yml -f b.yml``) merged over the base by the compose specification's merge rules
(https://github.com/compose-spec/compose-spec/blob/main/13-merge.md), as far as deploy/ uses them:
mappings merge key by key, ``command``/``entrypoint``/``healthcheck.test`` are replaced, other sequences
are appended (without repeats), ``!override`` replaces a value whole and ``!reset`` removes it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
BASE = DEPLOY / "docker-compose.yml"
PATRONI = DEPLOY / "docker-compose.patroni.yml"
REPLACED = {"command", "entrypoint", "test"}


class Override:
    def __init__(self, value: Any) -> None:
        self.value = value


class Reset:
    pass


class _Loader(yaml.SafeLoader):
    pass


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve `<<` inside it, as safe_load does
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("!override", _override)
_Loader.add_constructor("!reset", lambda loader, node: Reset())


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader with two more tags


def _merge(base: Any, over: Any, key: str = "") -> Any:
    if isinstance(over, Override):
        return copy.deepcopy(over.value)
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            if isinstance(v, Reset):
                out.pop(k, None)
            else:
                out[k] = _merge(out[k], v, k) if k in out else _strip(v)
        return out
    if isinstance(base, list) and isinstance(over, list) and key not in REPLACED:
        return [*base, *(x for x in over if x not in base)]
    return _strip(over)


def _strip(value: Any) -> Any:
    """A value new to the base, with any tags inside it applied."""
    if isinstance(value, Override):
        return copy.deepcopy(value.value)
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not isinstance(v, Reset)}
    return copy.deepcopy(value)


def merged(*paths: Path) -> dict[str, Any]:
    """The project ``docker compose -f paths[0] -f paths[1] ...`` would run (before interpolation)."""
    out: dict[str, Any] = {}
    for p in paths:
        out = _merge(out, load(p))
    return out


def variants() -> dict[str, dict[str, Any]]:
    """Both ways the stack runs: the single Postgres server, and the Patroni members."""
    return {"single": merged(BASE), "patroni": merged(BASE, PATRONI)}
