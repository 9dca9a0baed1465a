"""Fixtures of the core tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

import sys

import pytest

from conduit_test_support import TESTKIT, install_plugin_dist


@pytest.fixture
def contract_site(plugin_site):
    """The testkit plugins and ``contractkit`` (stages keeping or breaking the artifact contracts, stages whose
    set-up fails, a failing sink)."""
    from conduit.plugins import get_registry

    install_plugin_dist(plugin_site, "conduit-contractkit", TESTKIT / "conduit_contractkit.py",
                        {"contractkit": "conduit_contractkit"})
    get_registry(refresh=True)
    yield plugin_site
    sys.modules.pop("conduit_contractkit", None)
