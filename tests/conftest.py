"""Shared fixtures (helpers live in conduit_test_support.py)."""

from __future__ import annotations

import os
import sys

import pytest

from conduit_test_support import TESTKIT, install_plugin_dist


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A site directory holding the testkit plugin (and a broken one), on sys.path and PYTHONPATH."""
    site = tmp_path / "site"
    install_plugin_dist(site, "conduit-testkit", TESTKIT / "conduit_testkit.py", {"testkit": "conduit_testkit"})
    install_plugin_dist(site, "conduit-broken", TESTKIT / "conduit_broken.py", {"broken": "conduit_broken"})
    install_plugin_dist(site, "conduit-badstage", TESTKIT / "conduit_badstage.py", {"badstage": "conduit_badstage"})
    install_plugin_dist(site, "conduit-badhook", TESTKIT / "conduit_badhook.py", {"badhook": "conduit_badhook"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    from conduit.plugins import get_registry

    get_registry(refresh=True)
    yield site
    for name in ("conduit_testkit", "conduit_broken", "conduit_badstage", "conduit_badhook"):
        sys.modules.pop(name, None)
    monkeypatch.undo()
    get_registry(refresh=True)
