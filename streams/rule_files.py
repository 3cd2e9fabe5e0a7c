"""The YAML plumbing segment and journey definition files share: entries, fields, errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class DefinitionError(ValueError):
    """A segment or journey file that cannot be used; the message names file, entry, error."""

    def __init__(self, source: str, entry: str | None, error: str) -> None:
        where = f"{source}: {entry}" if entry else source
        super().__init__(f"{where}: {error}")
        self.source, self.entry, self.error = source, entry, error


def read_entries(
    path: Path | None, default: str, top_key: str
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The named entries under ``top_key`` of a YAML file (``None``: the packaged ``default``).

    Returns the source name for messages and ``(name, entry)`` pairs; rejects what is not
    a list of mappings with a unique, well-formed ``name``.
    """
    if path is None:
        source = f"{top_key} defaults ({default})"
        package = f"streams.{top_key}"
        text = resources.files(package).joinpath(default).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DefinitionError(source, None, f"cannot read: {exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionError(source, None, f"invalid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get(top_key), list):
        raise DefinitionError(source, None, f"expected a mapping with a list under '{top_key}'")
    entries: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, raw in enumerate(doc[top_key]):
        label = f"entry #{index + 1}"
        if not isinstance(raw, dict):
            raise DefinitionError(source, label, "expected a mapping")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise DefinitionError(source, label, f"'name' must match {_NAME.pattern}, got {name!r}")
        if name in seen:
            raise DefinitionError(source, name, "duplicate name")
        seen.add(name)
        entries.append((name, raw))
    return source, entries


def field_reader(source: str, name: str, entry: Mapping[str, Any], allowed: set[str]) -> Reader:
    """A typed accessor for one entry's fields that turns mistakes into DefinitionErrors."""
    unknown = sorted(set(entry) - allowed - {"name"})
    if unknown:
        raise DefinitionError(source, name, f"unknown field(s): {', '.join(unknown)}")
    return Reader(source, name, entry)


Checker = Callable[[Any], bool] | None


@dataclass(frozen=True, slots=True)
class Reader:
    source: str
    name: str
    entry: Mapping[str, Any]

    def fail(self, error: str) -> DefinitionError:
        return DefinitionError(self.source, self.name, error)

    def get(self, key: str, kind: type[Any], default: Any = ..., check: Checker = None) -> Any:
        if key not in self.entry:
            if default is ...:
                raise self.fail(f"missing field '{key}'")
            return default
        value = self.entry[key]
        if not isinstance(value, kind) or (check is not None and not check(value)):
            raise self.fail(f"field '{key}' has an invalid value {value!r}")
        return value
