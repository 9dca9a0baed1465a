"""conduit.lazy: a package's lazily exported names load on first use and are looked up once."""

from __future__ import annotations

import sys
import types

import pytest

from conduit.lazy import lazy_exports


def _package(name: str, table: dict) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__getattr__ = lazy_exports(name, table)  # type: ignore[attr-defined]
    sys.modules[name] = module
    return module


def test_a_lazy_name_loads_once_then_lives_in_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    package = _package("lazy_probe_pkg", {"dumps": ("json", "dumps")})
    monkeypatch.setitem(sys.modules, "lazy_probe_pkg", package)
    import json

    assert "dumps" not in vars(package)
    assert package.dumps is json.dumps
    # Cached in the namespace: the module __getattr__ is not consulted again.
    assert vars(package)["dumps"] is json.dumps


def test_an_unknown_name_is_an_attribute_error_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    package = _package("lazy_probe_pkg2", {})
    monkeypatch.setitem(sys.modules, "lazy_probe_pkg2", package)
    with pytest.raises(AttributeError, match="lazy_probe_pkg2.*nothing"):
        package.nothing
