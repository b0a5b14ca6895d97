"""Download FineMath-4+ and cut the paper's disjoint splits (needs network and `datasets`).

    python configs/paper/prepare_finemath.py --tokenizer ./TinyLlama-1.1B -o data/finemath

Documents are taken in the dataset's order, each into exactly one split, until the split's
budget (counted with the base model's tokenizer) is reached:

    heldout.jsonl     2,000 documents            (NLL and ELBO/IWAE bounds)
    warm.jsonl        240M tokens of raw text    (teacher latents, iteration 0)
    bootstrap.jsonl   1.92B tokens of raw text   (the corpus whose latents EM infers)

Each line is {"id", "text"}, the input `bolt chunk` reads. Files are written under a
temporary name and renamed when complete; a rerun starts over.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

SPLITS = (("heldout", "documents", 2_000), ("warm", "tokens", 240_000_000), ("bootstrap", "tokens", 1_920_000_000))


def write_splits(
    documents: Iterable[tuple[str, str]], count_tokens: Callable[[str], int], output: Path, splits=SPLITS
) -> dict[str, dict[str, int]]:
    """Fill each split in turn from ``documents``; return documents and tokens per split."""
    output.mkdir(parents=True, exist_ok=True)
    stream = iter(documents)
    totals: dict[str, dict[str, int]] = {}
    for name, unit, budget in splits:
        path = output / f"{name}.jsonl"
        temporary = path.with_suffix(".jsonl.tmp")
        count = {"documents": 0, "tokens": 0}
        with open(temporary, "w", encoding="utf-8") as handle:
            while count[unit] < budget:
                try:
                    doc_id, text = next(stream)
                except StopIteration:
                    break
                handle.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
                count["documents"] += 1
                count["tokens"] += count_tokens(text)
        os.replace(temporary, path)
        totals[name] = count
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tokenizer", required=True, help="the base model's directory (TinyLlama-1.1B): budgets are in its tokens"
    )
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument(
        "--dataset", default="HuggingFaceTB/finemath", help="Hugging Face dataset (default: HuggingFaceTB/finemath)"
    )
    parser.add_argument("--subset", default="finemath-4plus")
    args = parser.parse_args()

    from datasets import load_dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    rows = load_dataset(args.dataset, args.subset, split="train", streaming=True)
    documents = ((f"finemath-{index}", row["text"]) for index, row in enumerate(rows))
    totals = write_splits(
        documents, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]), args.output
    )
    print(json.dumps(totals, indent=2))


if __name__ == "__main__":
    main()
