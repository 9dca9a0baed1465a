"""Names a package exports but imports only on first use (so that importing it stays cheap)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, table: Mapping[str, str | tuple[str, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``table`` maps each public name to the module that defines it
    (a submodule name relative to ``package``, or ``(absolute module, attribute)``)."""

    def __getattr__(name: str) -> Any:
        try:
            where = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, attr = (f"{package}.{where}", name) if isinstance(where, str) else where
        return getattr(importlib.import_module(module), attr)

    return __getattr__
