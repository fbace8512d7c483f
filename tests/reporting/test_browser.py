"""The report in a real headless browser: Chromium (Debian's package; `make browser` installs it as root)
driven by Playwright. The page loads with no console error, no failed request and no script error, every
image renders, and nothing is wider than the window. A full-page screenshot is kept in $MEMSEL_SCREENSHOTS
(when set) for a person to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
WIDTH = 1400


def chromium() -> str | None:
    """$MEMSEL_CHROMIUM, else the first Chromium or Chrome on PATH."""
    found = os.environ.get("MEMSEL_CHROMIUM") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    return found if found and Path(found).exists() else None


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """A Playwright page in headless Chromium with a fresh profile; skips with the reason when there is none."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -c constraints.txt -e '.[test]')")
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine: `make browser` installs Debian's chromium (needs root), or set "
                    "MEMSEL_CHROMIUM to a Chromium or Chrome binary")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=exe, headless=True, args=FLAGS,
                                                       viewport={"width": WIDTH, "height": 900})
        try:
            yield context.new_page()
        finally:
            context.close()  # ends the browser process Playwright started


@pytest.mark.slow
def test_page_loads_cleanly_and_every_image_renders(browser_page, built_report, tmp_path):
    page_file, _ = built_report
    page, problems = browser_page, []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    response = page.goto(page_file.resolve().as_uri(), wait_until="load")
    assert response is None or response.ok
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => ({src: e.getAttribute('src'), done: e.complete, w: e.naturalWidth, "
               "h: e.naturalHeight, shown: e.getBoundingClientRect().width, right: e.getBoundingClientRect().right}))")
    assert len(images) >= 7
    broken = [i["src"] for i in images if not (i["done"] and i["w"] > 0 and i["h"] > 0 and i["shown"] > 0)]
    assert not broken, f"images that did not render: {broken}"
    assert all(i["right"] <= WIDTH for i in images), "an image runs past the window"
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, "the page scrolls sideways"
    assert page.title().startswith("memsel report")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    keep = os.environ.get("MEMSEL_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / "report.png")
    assert not problems, problems
