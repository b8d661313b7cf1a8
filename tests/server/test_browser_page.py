"""The memory browser page in headless Chromium, against uvicorn on 127.0.0.1.

Playwright for Python drives the system Chromium (`executable_path`; Playwright's own
browser download is never used). Without Playwright or a Chromium the test skips, saying
why; with MEMCOLLAB_REQUIRE_BROWSER=1 (scripts/test.sh sets it once it installed Chromium)
it fails instead. MEMCOLLAB_WRITE_SCREENSHOT=1 writes the README's screenshot,
docs/images/browser.png; the page is checked either way.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memcollab.server.app import create_app
from memcollab.server.context import ServerContext
from tests.server.browse_seed import (
    BIG,
    FLAG_REASON,
    NS,
    OTHER,
    OTHER_MARK,
    XSS_AVOID,
    XSS_ENFORCE,
    XSS_WHEN,
    Seeded,
    seed,
)
from tests.server.conftest import Storage

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "browser.png"


def _unavailable(reason: str) -> None:
    if os.environ.get("MEMCOLLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"headless Chromium required (MEMCOLLAB_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(reason)


def _chromium() -> str:
    for candidate in (
        os.environ.get("MEMCOLLAB_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    _unavailable(
        "no Chromium found (apt-get install chromium, or set MEMCOLLAB_CHROMIUM to its path)"
    )
    raise AssertionError("unreachable")


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def served(storage: Storage) -> Iterator[tuple[str, Seeded]]:
    """uvicorn on 127.0.0.1 (a free port), in a thread, over a seeded SQLite memory."""
    import uvicorn

    ctx: ServerContext = storage.new("sqlite")
    seeded = seed(ctx)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", seeded
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_the_page_shows_the_keys_namespace_and_only_it(
    browser: Any, served: tuple[str, Seeded]
) -> None:
    base, s = served
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda e: errors.append(str(e)))
    expected = ("status of 401", "status of 403")  # the wrong key and the other namespace
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not any(e in m.text for e in expected)
            else None
        ),
    )
    page.goto(f"{base}/browse")
    assert "Enter an API key" in page.text_content("#status")

    # A wrong key: a clear message, nothing shown, nothing kept.
    page.fill("#key", "mck_0123456789abcdef_" + "x" * 43)
    page.click("#connect")
    page.wait_for_selector("#status.error")
    assert "401" in page.text_content("#status")
    assert page.locator("article.record").count() == 0
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#key", s.key)
    page.click("#connect")
    page.wait_for_selector("#status.ok")
    cards = page.locator("article.record")
    assert cards.count() == 3
    assert page.evaluate("() => document.getElementById('key').value") == ""

    # Stats at the top.
    stats = dict(
        page.eval_on_selector_all(
            "#stats .stat",
            "els => els.map(e => [e.querySelector('.label').textContent,"
            " e.querySelector('.value').textContent])",
        )
    )
    assert stats["namespace"] == NS
    assert (stats["records"], stats["constraints"], stats["flagged"]) == ("3", "4", "1")
    assert (stats["retrieved"], stats["outcomes"], stats["attempts"]) == ("16", "11", "2")

    # Grouped by category, with constraints, provenance, usage, flags and history.
    text = page.inner_text("#records")
    for heading in ("algebra", "linear equations", "number theory", "divisibility", "strings"):
        assert heading in text
    linear = page.locator(f'article.record[data-record="{s.linear}"]')
    assert "When an equation is linear in one unknown, enforce undoing" in linear.inner_text()
    assert f"added by key {s.writer_id}" in linear.inner_text()
    assert "retrieved 12×" in linear.inner_text()
    row = linear.locator("table.per-model tr", has_text=BIG).inner_text().split("\t")
    assert [c.strip() for c in row[:3]] == [BIG, "5", "1"]
    assert row[3].strip().startswith("+0.17") and row[5].strip() == "unsure"
    flagged = page.locator(f'article.record[data-record="{s.divisible}"]')
    assert "flagged" in (flagged.get_attribute("class") or "")
    assert FLAG_REASON in flagged.locator(".flag-reason").inner_text()
    assert flagged.locator("details.history li").count() == 3
    assert "support 3" in flagged.inner_text()

    # Another namespace's records never reach the page, even when the page's key asks.
    html = page.content()
    assert OTHER_MARK not in html and not any(rid in html for rid in s.other)
    status = page.evaluate(
        """async (ns) => (await fetch('v1/browse?namespace=' + ns, {headers: {Authorization:
        'Bearer ' + sessionStorage.getItem('memcollab.browse.key')}})).status""",
        OTHER,
    )
    assert status == 403

    # The XSS record is inert: its text shows as text, no element or handler came from it.
    xss = page.locator(f'article.record[data-record="{s.xss}"]')
    shown = xss.locator("li.constraint").inner_text()
    assert f"When {XSS_WHEN}, enforce {XSS_ENFORCE}; avoid {XSS_AVOID}." in shown
    assert page.locator("#records img, #records script, #injected, #records b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert dialogs == [] and errors == []

    # The filter box and the flagged switch.
    page.fill("#filter", "inclusion-exclusion")
    assert page.locator("article.record:visible").count() == 1
    assert "1 of 3" in page.text_content("#shown")
    assert page.locator("h2.category:visible").inner_text().endswith("number theory")
    page.fill("#filter", "")
    page.uncheck("#show-flagged")
    assert page.locator("article.record:visible").count() == 2
    page.check("#show-flagged")

    if os.environ.get("MEMCOLLAB_WRITE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert page.screenshot(full_page=True)[:8] == b"\x89PNG\r\n\x1a\n"

    # The key lasts for the tab (a reload shows the namespace again) until forgotten.
    page.reload()
    page.wait_for_selector("#status.ok")
    assert page.locator("article.record").count() == 3
    page.click("#forget")
    assert page.locator("article.record").count() == 0
    assert page.evaluate("sessionStorage.length") == 0
    assert dialogs == [] and errors == []


def test_the_other_namespaces_key_sees_only_its_own(
    browser: Any, served: tuple[str, Seeded]
) -> None:
    base, s = served
    page = browser.new_page()
    page.goto(f"{base}/browse")
    page.fill("#key", s.other_key)
    page.click("#connect")
    page.wait_for_selector("#status.ok")
    ids = page.eval_on_selector_all("article.record", "els => els.map(e => e.dataset.record)")
    assert sorted(ids) == sorted(s.other)
    html = page.content()
    assert not any(rid in html for rid in (s.linear, s.divisible, s.xss))
    assert "script" not in page.inner_text("#records")
