"""report.html: what a reader of the page relies on, checked by parsing the
HTML with the standard library's html.parser (no string matching on markup)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from gate.report import render_html, write_all
from gate.report.plots import forest_svg

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"


def fixture(name: str = "three_candidates.json") -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class Page(HTMLParser):
    """Elements (tag, attrs, text inside) and the page's text, in order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._stack: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.elements: list[tuple[str, dict[str, str | None], str]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in {"meta", "br", "col", "path", "use", "rect"}:
            self._stack.append((tag, dict(attrs), []))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                name, attrs, parts = self._stack.pop(i)
                del self._stack[i:]
                text = "".join(parts)
                self.elements.append((name, attrs, " ".join(text.split())))
                if self._stack:
                    self._stack[-1][2].append(text)
                return

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._stack:
            self._stack[-1][2].append(data)

    def find(self, tag: str, cls: str | None = None) -> list[tuple[dict[str, str | None], str]]:
        return [(a, t) for n, a, t in self.elements if n == tag
                and (cls is None or cls in (a.get("class") or "").split())]

    @property
    def all_text(self) -> str:
        return " ".join("".join(self.text).split())


@pytest.fixture(scope="module")
def html() -> str:
    """The main fixture's page, rendered once (a render takes about 0.5 s)."""
    return render_html(fixture())


@pytest.fixture
def page(html: str) -> Page:
    return Page(html)


def test_one_verdict_banner_per_candidate_with_its_reason(page: Page) -> None:
    results = fixture()
    assert len(page.find("section", "candidate")) == 3
    banners = [t for _, t in page.find("div", "banner")]
    assert banners[0].startswith("Release: FAIL")
    for candidate in results["candidates"]:
        assert any(t.startswith(candidate["verdict"]) and candidate["reason"] in t
                   for t in banners[1:]), candidate["name"]


def test_a_table_per_tier_with_points_and_own_units(page: Page) -> None:
    tables = page.find("table", "tasks")
    assert len(tables) == 9  # 3 candidates x 3 tiers
    rows = [t for _, t in page.find("tr")]
    capitals = next(r for r in rows if r.startswith("toy_capitals acc") and "95.5%" in r)
    assert "30.5% 95.5% +65.0 pts [+60.0, +70.0] pts (90%) <0.0001 200 gain ≥ 5.0 pts PASS" in capitals
    wikitext = next(r for r in rows if r.startswith("toy_wikitext") and "31.70" in r)
    # perplexity: the change relative to the base, in the units of its margin
    assert "↓" in wikitext and "+74.2% [+65.4%, +83.5%] (90%)" in wikitext and "rise ≤ 5.0%" in wikitext
    assert "FAIL" in wikitext
    partial = next(r for r in rows if r.startswith("toy_general_qa") and "72.5%" in r)
    assert "38 of 40" in partial
    summ = next(r for r in rows if r.startswith("toy_summ") and "17.10" in r)
    assert "unpaired" in summ


def test_flipped_items_only_for_tasks_that_did_not_pass(page: Page) -> None:
    summaries = [t for _, t in page.find("summary")]
    assert summaries == [
        "toy_country_facts: 3 items the base got right and the candidate got wrong",
        "toy_capital_reverse: 1 item the base got right and the candidate got wrong",
        "toy_general_qa: 2 items the base got right and the candidate got wrong",
        "toy_country_facts: 1 item the base got right and the candidate got wrong",
    ]
    details = page.find("details")[0][1]
    assert "What language is spoken in Brazil?" in details and "Brasília" in details


def test_remedies_only_for_the_forgetting_candidate_with_its_numbers(page: Page) -> None:
    remedies = page.find("div", "remedies")
    assert len(remedies) == 1
    text = remedies[0][1]
    assert ("This adapter was trained at lr 1e-2 for 8 epochs on rank 16 (alpha 32) "
            "targeting q_proj, v_proj.") in text
    assert "trained at lr 1e-2 (set in training_args.json); try lr 1e-3" in text and "step 150 of 800" in text
    assert "replay" in text and "r=8" in text
    assert not Page(render_html(fixture("passing.json"))).find("div", "remedies")


def test_remedies_without_training_facts_are_still_given() -> None:
    results = fixture()
    results["candidates"][1]["training"] = None
    text = Page(render_html(results)).find("div", "remedies")[0][1]
    assert "Try a learning rate about 10× lower" in text and "trained at" not in text


def test_probes_flags_and_provenance(page: Page) -> None:
    assert [t for a, t in page.find("span", "flag")].count("base_at_chance") == 1
    probes = page.find("section")[-2]
    assert probes[0].get("id") == "probes" and "lm_head_targets" in probes[1]
    terms = [t for _, t in page.find("dt")]
    values = [t for _, t in page.find("dd")]
    provenance = dict(zip(terms[-len(values):], values, strict=True))
    assert provenance["lm-eval version"] == "0.4.13"
    assert provenance["engine options.max_num_seqs"] == "1"
    assert provenance["suite hash"] == "sha256:5u17e0a1b2c3"
    assert provenance["thresholds hash"] == "sha256:7h4e5601d2e3"
    assert provenance["git commit"] == "4e1c2d9a8b7f6e5d4c3b2a190817263544536271"
    assert provenance["created"] == "2026-11-28T20:00:00Z"
    assert provenance["baseline fingerprint"] == "sha256:ba5e0001f00d (reused)"
    assert provenance["candidate overfit"] == "sha256:c0ffee5eed1234ab — runs/overfit/adapter"


def test_self_contained_no_script_no_external_reference(page: Page) -> None:
    names = {tag for tag, _ in page.tags}
    assert "script" not in names and "img" not in names and "link" not in names
    assert {"svg", "style"} <= names
    for _, attrs in page.tags:
        for key, value in attrs.items():
            if key in {"href", "src", "xlink:href"}:
                assert value is not None and value.startswith("#"), (key, value)
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in (csp[0]["content"] or "")


def test_one_forest_plot_per_candidate_with_unique_ids(page: Page) -> None:
    assert len([t for t, _ in page.tags if t == "svg"]) == 3
    ids = [a["id"] for _, a in page.tags if a.get("id")]
    assert len(ids) == len(set(ids))


def test_rendering_is_deterministic(html: str) -> None:
    results = fixture()
    assert render_html(results) == html
    svg = forest_svg(results["candidates"][1])
    assert svg == forest_svg(results["candidates"][1])
    assert "<!--" not in svg and "Date" not in svg and "<text" not in svg


def test_write_all_writes_three_files(tmp_path: Path) -> None:
    written = write_all(fixture(), tmp_path / "out")
    assert {p.name for p in written.values()} == {"report.html", "junit.xml", "summary.md"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "junit.xml", "report.html", "summary.md"]
