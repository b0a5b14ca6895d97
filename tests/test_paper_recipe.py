"""The paper recipe's data preparation (the download itself needs network and is not run here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "configs" / "paper" / "prepare_finemath.py"


def _module():
    spec = importlib.util.spec_from_file_location("prepare_finemath", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_splits_are_disjoint_in_order_and_fill_their_budgets(tmp_path):
    prepare = _module()
    documents = [(f"d{i}", "word " * (i % 7 + 1)) for i in range(100)]
    splits = (("heldout", "documents", 5), ("warm", "tokens", 40), ("bootstrap", "tokens", 10_000))
    totals = prepare.write_splits(documents, lambda text: len(text.split()), tmp_path, splits)

    read = {name: [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()] for name, _, _ in splits}
    assert [row["id"] for name in ("heldout", "warm", "bootstrap") for row in read[name]] == [d for d, _ in documents]
    assert len(read["heldout"]) == 5 == totals["heldout"]["documents"]
    warm_tokens = sum(len(row["text"].split()) for row in read["warm"])
    assert warm_tokens == totals["warm"]["tokens"] >= 40
    assert warm_tokens - len(read["warm"][-1]["text"].split()) < 40  # stops at the first document over budget
    assert totals["bootstrap"]["documents"] == 100 - 5 - len(read["warm"])  # the stream ran out first
    assert not list(tmp_path.glob("*.tmp"))
