"""report.html in a real headless browser: it renders offline, quietly.

Drives the system chromium (scripts/install_system_tools.sh; GATE_CHROMIUM
overrides the path) through Playwright's `executable_path`, so no browser is
downloaded. Asserts what a reader of a CI artifact relies on: no console
error, no request but the file itself, and a page that actually drew.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from gate.report import write_all

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
CHROMIUM = os.environ.get("GATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def distinct_rows(png: bytes) -> int:
    """Distinct pixel rows of an 8-bit RGB(A) PNG (standard library only): a
    single-colour image has exactly one."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            chunks.append(data)
        pos += 12 + length
    width, _height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    stride = width * (3 if colour == 2 else 4) + 1
    raw = zlib.decompress(b"".join(chunks))
    # Rows are compared as stored (after PNG filtering), which is enough: rows
    # of one colour filter to identical bytes, drawn rows do not.
    return len({raw[i + 1:i + stride] for i in range(0, len(raw), stride)})


@pytest.mark.browser
def test_report_renders_offline_without_errors(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run scripts/install_system_tools.sh"
    results = json.loads((FIXTURES / "three_candidates.json").read_text(encoding="utf-8"))
    html = write_all(results, tmp_path)["html"]
    url = html.resolve().as_uri()
    console: list[tuple[str, str]] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: console.append((message.type, message.text)))
            page.on("pageerror", lambda error: console.append(("pageerror", str(error))))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url, wait_until="load")
            screenshot = page.screenshot(full_page=True)
            heading = page.inner_text("h1")
        finally:
            browser.close()
    assert [m for m in console if m[0] in ("error", "pageerror")] == []
    assert requests == [url]
    assert heading == "Release gate report"
    assert len(screenshot) > 20_000
    assert distinct_rows(screenshot) > 10


@pytest.mark.browser
def test_the_printed_first_page_is_the_approvers_matrix(tmp_path: Path) -> None:
    """An approver prints the report (or saves it as PDF) for a release ticket:
    the first page must hold the release verdict, the candidates x tiers
    matrix and the provenance line, and nothing of the per-candidate detail."""
    import unicodedata

    import pypdf
    from playwright.sync_api import sync_playwright

    results = json.loads((FIXTURES / "three_candidates.json").read_text(encoding="utf-8"))
    html = write_all(results, tmp_path)["html"]
    pdf = tmp_path / "report.pdf"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(html.resolve().as_uri(), wait_until="load")
            page.pdf(path=str(pdf), prefer_css_page_size=True)
        finally:
            browser.close()
    pages = [unicodedata.normalize("NFKC", p.extract_text()) for p in pypdf.PdfReader(pdf).pages]
    assert len(pages) > 1
    first = pages[0]
    assert f"Release: {results['release']['verdict']}" in first
    assert "At a glance" in first and "target tier" in first and "general tier" in first
    for cand in results["candidates"]:
        assert cand["name"] in first, cand["name"]
        for tier in cand["tiers"]:
            assert tier["worst_task"] in first, (cand["name"], tier["tier"])
    assert "Provenance:" in first
    rest = "\n".join(pages[1:])
    for cand in results["candidates"]:  # each candidate's own section starts after the first page
        heading = f"Candidate {cand['name']} ({cand['kind']})"
        assert heading not in first and heading in rest, heading
