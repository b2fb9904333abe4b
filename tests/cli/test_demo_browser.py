"""The demo report in a real browser (Debian's chromium, headless, through Playwright): every picture loads
and is shown at its own size (never shrunk below the enlarged pixels), nothing overflows a 1280 px window,
every figure has a caption with a number. Leaves a full-page screenshot for a person to look at.

Slow (runs the demo): ``python -m pytest -m slow tests/cli/test_demo_browser.py``; needs ``chromium`` and
the ``playwright`` Python package (no browser download: the system chromium is used).
"""
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
CHROMIUM = os.environ.get("UNLEARNKIT_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
READ_BACK = """() => ({
  images: [...document.images].map(i => ({src: i.getAttribute('src'), natural: i.naturalWidth,
                                          shown: i.getBoundingClientRect().width})),
  overflow: document.scrollingElement.scrollWidth - window.innerWidth,
  figures: [...document.querySelectorAll('figure')]
    .map(f => f.querySelector('figcaption')?.textContent ?? ''),
})"""


@pytest.mark.slow
def test_the_report_reads_well_in_chromium(tmp_path, committed):
    from playwright.sync_api import sync_playwright

    from unlearnkit.cli import main

    assert Path(CHROMIUM).is_file(), f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--attack-prompts", "2", "--no-progress"]) == 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        seen = page.evaluate(READ_BACK)
        page.screenshot(path=str(out / "screenshot.png"), full_page=True)
        browser.close()
    print(f"screenshot: {out / 'screenshot.png'}")
    assert len(seen["images"]) >= 10
    assert [i["src"] for i in seen["images"] if i["natural"] == 0] == []  # every picture loaded
    assert [i["src"] for i in seen["images"] if i["shown"] < i["natural"]] == []  # none shrunk
    assert seen["overflow"] <= 0
    assert all(any(ch.isdigit() for ch in caption) for caption in seen["figures"])
