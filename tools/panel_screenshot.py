"""A screenshot of the control panel during the demo run, for docs/images/panel.png (`make panel-screenshot`).

Runs ``conduit run pipelines/demo.toml --panel 127.0.0.1:0`` (outputs under
out/panel-demo/), changes a parameter and adds a gate through the JSON API as
a shift crew would, then renders the page in headless Chromium (Playwright,
/usr/bin/chromium) and stops the run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins"))

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(out: str = "docs/images/panel.png", wait: float = 9.0) -> int:
    from conduit_panel.client import PanelClient

    log = Path(tempfile.mkdtemp()) / "stderr.txt"
    conduit = Path(sys.executable).parent / "conduit"
    proc = subprocess.Popen([str(conduit), "run", "pipelines/demo.toml", "--panel", "127.0.0.1:0",
                             "--set", "source.events=3000", "--set", "hdf5.path=../out/panel-demo/run_{run:04d}.h5",
                             "--set", "rerun.path=../out/panel-demo/run_{run:04d}.rrd",
                             "--set", "histogram.path=../out/panel-demo/histograms_{run:04d}.h5"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        url = None
        for _ in range(1800):
            match = re.search(r"control panel: (http://\S+?/)", log.read_text())
            if match:
                url = match.group(1)
                break
            if proc.poll() is not None:
                print(log.read_text(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        client = PanelClient(url.removeprefix("http://"))
        while client.status()["events"]["analysed"] < 20:
            time.sleep(0.5)
        client.post("set", {"set": ["pointcloud.peak_threshold=45"]})
        client.post("gates", {"name": "protons", "histogram": "pid",
                              "polygon": [[0.05, 2.0], [0.6, 2.0], [0.6, 9.0], [0.05, 9.0]]})
        time.sleep(wait)
        from playwright.sync_api import sync_playwright

        with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium",
                                                           headless=True, args=FLAGS,
                                                           viewport={"width": 1400, "height": 1200})
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#phase.running")
            page.wait_for_timeout(2500)
            page.screenshot(path=out, full_page=True)
            browser.close()
        print(f"wrote {out}")
        client.post("stop")
        proc.wait(timeout=120)
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
