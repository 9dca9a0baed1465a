"""Fixtures for the sink tests: the ``conduit_sinkkit`` test plugin on the path, pipelines in tmp dirs."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def sinkkit(monkeypatch):
    """Registers the ``sinkkit`` source and ``sinkkit.analyse`` stage (also for subprocesses)."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CONDUIT_PLUGINS", "conduit_sinkkit")
    from conduit.plugins import get_registry

    registry = get_registry(refresh=True)
    assert "sinkkit" in registry.sources, registry.failures
    yield registry
    monkeypatch.undo()
    sys.modules.pop("conduit_sinkkit", None)
    get_registry(refresh=True)


@pytest.fixture
def write_pipeline(tmp_path):
    """write_pipeline(text, name="pipe.toml") -> Path of a pipeline file in tmp_path."""

    def write(text: str, name: str = "pipe.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
