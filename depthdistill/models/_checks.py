"""Argument checks shared by the model factories."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from depthdistill.errors import ConfigError


def check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def unknown_name(what: str, name: str, known: Iterable[str], hint: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=3)
    suggestion = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ConfigError(f"unknown {what} {name!r}.{suggestion} {hint}")
