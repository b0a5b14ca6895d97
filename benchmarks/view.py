"""`bolt view` at scale: time to the first view, a sort and a filter in headless Chromium.

    python benchmarks/view.py [--chunks 100000]

Writes a synthetic E-step output (bolt.latents/1, 10 chunks per document, K = 4 candidates each,
one chunk in ten cut at the budget), builds the page with `bolt view`, opens it in headless
Chromium (Debian's /usr/bin/chromium through Playwright) and prints the milliseconds from
navigation to the first rendered page, for a sort by weight entropy and for the "cut" filter,
each against the target (first view 2 s, sort or filter 1 s).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import tempfile
import time
from pathlib import Path


def write_latents(path: Path, chunks: int, k: int = 4, seed: int = 0) -> None:
    from bolt.core.records import write_jsonl
    from bolt.estep.importance import effective_sample_size

    rng = random.Random(seed)
    documents = []
    for d in range(math.ceil(chunks / 10)):
        rows = []
        for c in range(min(10, chunks - 10 * d)):
            log_w = [rng.gauss(-5, 2) for _ in range(k)]
            latents = [
                f"{rng.randrange(10)}+{rng.randrange(10)}={rng.randrange(10)}-{rng.randrange(10)}={rng.randrange(10)}."
                for _ in range(k)
            ]
            chosen = max(range(k), key=lambda i: log_w[i])
            finished = (10 * d + c) % 10 != 0
            candidates = [
                {"latent": z, "log_p_joint": w - 1.0, "log_q": -1.0, "log_w": w, "finished": finished or i != chosen}
                for i, (z, w) in enumerate(zip(latents, log_w))
            ]
            rows.append(
                {
                    "text": f" Sentence {c} of document {d}, with some words in it.",
                    "prefix": f"The sentence before {c}.",
                    "latent": latents[chosen],
                    "log_p_joint": log_w[chosen] - 1.0,
                    "log_q": -1.0,
                    "log_w": log_w[chosen],
                    "k": k,
                    "ess": effective_sample_size(log_w),
                    "latent_finished": finished,
                    "candidates": candidates,
                }
            )
        documents.append({"format": "bolt.latents/1", "id": f"doc-{d}", "chunks": rows, "meta": {}})
    write_jsonl(path, documents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from bolt.apps.view import view

    chromium = shutil.which("chromium")
    with tempfile.TemporaryDirectory() as directory, sync_playwright() as playwright:
        root = Path(directory)
        write_latents(root / "latents.jsonl", args.chunks)
        started = time.perf_counter()
        view([root / "latents.jsonl"], root / "page")
        built = time.perf_counter() - started
        size = (root / "page" / "view.html").stat().st_size
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        started = time.perf_counter()
        page.goto((root / "page" / "view.html").as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        first = time.perf_counter() - started
        timings = {}
        for name, action in (
            ("sort by weight entropy", lambda: page.select_option("#sort", "entropy-desc")),
            ("filter: cut at the budget", lambda: page.check("#only-cut")),
        ):
            started = time.perf_counter()
            action()
            page.wait_for_function("document.getElementById('rows').children.length > 0")
            timings[name] = time.perf_counter() - started
        browser.close()
    print(
        f"{args.chunks:,} chunks; page built by bolt view in {built:.1f} s ({size / 2**20:.1f} MiB); headless Chromium:"
    )
    print(f"  first view                 {first * 1000:7.0f} ms  (target 2000 ms: {first / 2:.2f}x of it)")
    for name, seconds in timings.items():
        print(f"  {name:<26} {seconds * 1000:7.0f} ms  (target 1000 ms: {seconds:.2f}x of it)")


if __name__ == "__main__":
    main()
