"""`bolt view`: the page's data from real E-step output, and the page itself in headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from bolt.apps.view import collect, view
from bolt.cli import main
from bolt.core.records import write_jsonl
from bolt.errors import BoltError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def estep_output(tiny_trained_model, tiny_latents, tmp_path_factory):
    """A real E-step output with its K candidates kept, and a second E-step as "the next iteration"."""
    from bolt.estep.sampling import SamplingConfig
    from bolt.estep.stage import EStepConfig, estep_stage

    directory = tmp_path_factory.mktemp("view")
    for name, seed in (("em_1", 0), ("em_2", 1)):
        config = EStepConfig(samples=3, seed=seed, sampling=SamplingConfig(max_new_tokens=6), keep_candidates=True)
        estep_stage(
            tiny_trained_model, tiny_latents["bootstrap_chunks"], directory / "latents" / f"{name}.jsonl", config
        )
    return directory


def test_columns_hold_every_chunk_with_its_candidates_weights_and_the_next_iteration(estep_output):
    from bolt.core.records import read_documents

    first, second = estep_output / "latents" / "em_1.jsonl", estep_output / "latents" / "em_2.jsonl"
    data = collect([first, second])
    columns = data["columns"]
    documents = read_documents(first)
    chunks = [(d.id, i, c) for d in documents for i, c in enumerate(d.chunks)]
    assert columns["doc"] == [d for d, _, _ in chunks] and columns["latent"] == [c.latent for _, _, c in chunks]
    assert data["files"] == ["em_1.jsonl", "em_2.jsonl"]
    later = {(d.id, i): c.latent for d in read_documents(second) for i, c in enumerate(d.chunks)}
    assert [others[0] for others in columns["others"]] == [later[(d, i)] for d, i, _ in chunks]
    for row, (_, _, chunk) in enumerate(chunks):
        candidates = columns["candidates"][row]
        assert len(candidates) == 3 and sum(c[4] for c in candidates) == pytest.approx(1.0, abs=1e-5)
        weights = [math.exp(c[3] - max(x[3] for x in candidates)) for c in candidates]
        assert [c[4] for c in candidates] == pytest.approx([w / sum(weights) for w in weights], abs=1e-6)
        assert columns["entropy"][row] == pytest.approx(
            -sum(c[4] * math.log(c[4]) for c in candidates if c[4] > 0), abs=1e-4
        )
        assert columns["log_w"][row] == pytest.approx(chunk.extra["log_w"]) and columns["ess"][row] == pytest.approx(
            chunk.extra["ess"]
        )
        assert columns["cut"][row] == (not chunk.extra["latent_finished"])
        assert chunk.latent in [c[0] for c in candidates]


def test_a_run_directory_and_bad_inputs(estep_output, tmp_path, capsys):
    assert main(["view", str(estep_output), "-o", str(tmp_path / "page")]) == 0
    page = (tmp_path / "page" / "view.html").read_text()
    assert (
        page.startswith("<!doctype html>")
        and "em_2.jsonl" in page
        and "http" not in page.split("<script", 1)[1].split("</script>")[-1]
    )
    assert json.loads((tmp_path / "page" / "manifest.json").read_text())["status"] == "complete"
    with pytest.raises(BoltError, match="no latents"):
        view([tmp_path], tmp_path / "x")
    write_jsonl(
        tmp_path / "chunks.jsonl",
        [{"format": "bolt.chunks/1", "id": "d", "chunks": [{"text": "a", "prefix": ""}], "meta": {}}],
    )
    with pytest.raises(BoltError, match="no chunk has a latent"):
        view([tmp_path / "chunks.jsonl"], tmp_path / "y")
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(BoltError, match="is a file"):
        view([estep_output], tmp_path / "mine.txt")


def _browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (scripts/setup.sh test installs Debian's package where apt-get can)")
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is part of the test extra: pip install -e '.[test]'"
    )
    return playwright


def _open(playwright, url: str):
    """Headless Chromium on the page; returns (browser, page, console errors)."""
    manager = playwright.sync_playwright().start()
    browser = manager.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return manager, browser, page, errors


def test_the_page_in_headless_chromium_rows_weights_sort_and_filters(estep_output, tmp_path):
    playwright = _browser()
    view([estep_output / "latents" / "em_1.jsonl", estep_output / "latents" / "em_2.jsonl"], tmp_path / "page")
    columns = collect([estep_output / "latents" / "em_1.jsonl"])["columns"]
    n = len(columns["doc"])
    manager, browser, page, errors = _open(playwright, (tmp_path / "page" / "view.html").as_uri())
    try:
        assert page.locator("tr.row").count() == min(n, 50)
        assert page.inner_text("#count") == f"{n} of {n} chunks"
        assert "mean ESS" in page.inner_text("#summary") and page.locator("#plots svg").count() == 2
        page.locator(
            "tr.row"
        ).first.click()  # the first chunk opens to its 3 candidates and the next iteration's latent
        assert (
            page.locator("tr.cand").count() == 3
            and "weight" in page.inner_text("tr.detail")
            and "em_2.jsonl" in page.inner_text("tr.detail")
        )
        page.select_option("#sort", "ess-asc")
        shown = [float(t) for t in page.locator("tr.row td:nth-child(7)").all_inner_texts()]
        assert shown == sorted(shown) and shown == sorted(round(e, 2) for e in columns["ess"])[: len(shown)]
        cut = sum(columns["cut"])
        page.check("#only-cut")
        assert page.inner_text("#count") == f"{cut} of {n} chunks" and page.locator("tr.row").count() == min(cut, 50)
        page.uncheck("#only-cut")
        page.fill("#search", columns["doc"][-1])
        assert page.inner_text("#count") == f"{columns['doc'].count(columns['doc'][-1])} of {n} chunks"
        page.screenshot(path=str(tmp_path / "view.png"))
        assert (tmp_path / "view.png").stat().st_size > 10_000
    finally:
        browser.close()
        manager.stop()
    assert errors == []


@pytest.mark.slow
def test_a_hundred_thousand_chunks_page_through_sort_and_filter(tmp_path):
    """The page holds 100,000 chunks and shows 50 (times: benchmarks/view.py)."""
    playwright = _browser()
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "benchmark_view", Path(__file__).resolve().parents[1] / "benchmarks" / "view.py"
    )
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    benchmark.write_latents(tmp_path / "big.jsonl", 100_000)
    view([tmp_path / "big.jsonl"], tmp_path / "page")
    manager, browser, page, errors = _open(playwright, (tmp_path / "page" / "view.html").as_uri())
    try:
        assert page.inner_text("#count") == "100,000 of 100,000 chunks" and page.locator("tr.row").count() == 50
        page.select_option("#sort", "entropy-desc")
        assert page.inner_text("#page").strip() == "page 1 of 2000"
        page.check("#only-cut")
        assert page.inner_text("#count") == "10,000 of 100,000 chunks"
        page.click("#next")
        assert page.inner_text("#page").strip() == "page 2 of 200"
    finally:
        browser.close()
        manager.stop()
    assert errors == []
