"""The panel's page in a real browser: Debian's Chromium, headless, driven by Playwright.

The test clicks each control and checks what the page then shows, and what the
run did (the record sink's file). `make test` installs Chromium (apt, via
tools/ensure-test-packages.sh) and Playwright (the test extra); without Chromium the
test is skipped, except on CI (.ci/run sets CI=1), where it fails.
"""

from __future__ import annotations

import os
import shutil

import pytest

from panel_support import read_record

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}: make test installs it (tools/ensure-test-packages.sh)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1400, "height": 1300})
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_every_control_clicked_in_the_page_shows_its_effect(start_panel_run, page):
    from playwright.sync_api import expect

    run = start_panel_run(rate=60)
    page.on("dialog", lambda dialog: dialog.accept())  # the stop button asks first
    page.goto(run.url)
    expect(page.locator("#run")).to_have_text("run 7")
    expect(page.locator("#phase")).to_have_text("running")
    expect(page.locator("#alarms")).to_contain_text("no alarms")
    expect(page.locator("#stages")).to_contain_text("panelkit.mark")
    expect(page.locator("#outputs")).to_contain_text("record_7.jsonl")

    page.click("#pause")
    expect(page.locator("#phase")).to_have_text("paused")
    expect(page.locator("#alarms")).to_contain_text("analysis paused")
    expect(page.locator("#pause")).to_be_disabled()
    page.click("#resume")
    expect(page.locator("#phase")).to_have_text("running")
    expect(page.locator("#message")).to_contain_text("analysis resumed")

    page.click("#reset")
    expect(page.locator("#message")).to_contain_text("histograms reset")

    value = page.locator('#params input[data-key="panelkit.mark.value"]')
    expect(value).to_have_value("1")
    value.fill("500")
    page.click("#apply")
    expect(page.locator("#param-errors")).to_have_text("--set panelkit.mark.value=500: must be ≤ 100, got 500.0")
    value.fill("4.5")
    page.click("#apply")
    expect(page.locator("#changes")).to_contain_text("panelkit.mark.value: 1 → 4.5")
    expect(page.locator('#params input[data-key="panelkit.mark.value"]')).to_have_value("4.5")
    expect(page.locator("#param-errors")).to_be_empty()

    page.fill("#gate-name", "protons")
    page.select_option("#gate-histogram", "pid")
    page.fill("#gate-shape", "0, 0; 1.5, 0; 1.5, 40")
    page.click("#gate-save")
    expect(page.locator("#gates")).to_contain_text("polygon 0, 0; 1.5, 0; 1.5, 40")
    page.fill("#gate-name", "bad")
    page.fill("#gate-shape", "0, 0; 1, 1")
    page.click("#gate-save")
    expect(page.locator("#gate-errors")).to_have_text("gate 'bad': a polygon needs at least 3 vertices, got 2")

    page.fill("#newrun-number", "9")
    page.click("#newrun")
    expect(page.locator("#run")).to_have_text("run 9")
    expect(page.locator("#message")).to_contain_text("run 9 started; closed 2 file(s)")
    expect(page.locator("#runs")).to_contain_text("record_7.jsonl")

    page.click("#stop")
    expect(page.locator("#phase")).to_have_text("ended", timeout=60_000)  # then the panel closes with the run
    assert run.wait_exit() == 0

    first = read_record(run.dir / "out/record_7.jsonl")
    assert "reset" in first and first[-1] == "closed"
    assert any(r.get("change", {}).get("changes", {}).get("panelkit.mark.value") == {"old": 1.0, "new": 4.5}
               for r in first if isinstance(r, dict))
    later = [r for r in read_record(run.dir / "out/record_9.jsonl") if isinstance(r, dict) and "id" in r]
    assert later and all(r["mark"] == 4.5 and r["run"] == 9 for r in later)
