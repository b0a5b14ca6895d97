"""Peak memory of each pipeline stage at 1x and 10x the corpus: does it stream?

    OMP_WAIT_POLICY=PASSIVE python benchmarks/memory.py [--documents 200] [--scale 10]

For each stage, each corpus size runs the stage's command in a fresh Python process (``bolt.cli.main``
with the arguments a user would give) and reads its peak resident memory (``VmHWM`` of
/proc/self/status, the process's own: ``ru_maxrss`` would count the parent's). A process that
imports the same modules and runs nothing gives the baseline; each line prints the peak above
that baseline, and the ratio of 10x to 1x. A stage that streams its input keeps the ratio near 1
(the target: at most 1.2); one that holds the corpus grows with it.

    chunk        bolt chunk corpus.jsonl                      (plain corpus -> bolt.chunks/1)
    synthesize   bolt synthesize chunks --teacher oracle      (the world's oracle: no model)
    estep        bolt estep chunks --model M -k 2             (tiny model, 4-token latents)
    train        bolt train latents --steps 20                (token store, then 20 steps)

The corpus is the embedded world's text (12 sentences per document).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CHILD = r"""
import json, sys
argv = json.loads(sys.argv[1])
# the same imports in every process
import bolt.cli, bolt.core.chunking, bolt.teachers.synthesize, bolt.estep.stage, bolt.train.training, torch
if argv:
    code = bolt.cli.main(argv)
    if code:
        sys.exit(code)
status = open("/proc/self/status").read()
print(json.dumps({"peak_kib": int(status.split("VmHWM:")[1].split()[0])}))
"""


def peak_kib(argv: list[str], cwd: Path) -> tuple[int, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=os.environ | {"BOLT_PROGRESS": "off"},
    )
    if result.returncode:
        raise SystemExit(f"{' '.join(argv) or 'baseline'} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_kib"], time.perf_counter() - started


def write_corpus(path: Path, documents: int) -> None:
    from bolt.apps.world.config import WorldConfig
    from bolt.apps.world.world import world_documents

    world = WorldConfig(warm_documents=documents, bootstrap_documents=0, heldout_documents=0)
    with path.open("w") as handle:
        for document in world_documents(world, seed=0)["warm"]:
            handle.write(json.dumps({"id": document.id, "text": document.text}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200, help="documents of the 1x corpus (default: 200)")
    parser.add_argument(
        "--scale", type=int, default=10, help="the larger corpus is this many times the first (default: 10)"
    )
    parser.add_argument("--stages", default="chunk,synthesize,estep,train")
    args = parser.parse_args()
    stages = args.stages.split(",")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        model = root / "model"
        sizes = {"1x": args.documents, f"{args.scale}x": args.documents * args.scale}
        for name, documents in sizes.items():
            folder = root / name
            folder.mkdir()
            write_corpus(folder / "corpus.jsonl", documents)
            # inputs of the later stages, made once per size (not measured)
            from bolt.cli import main as bolt

            for argv in (
                ["chunk", "corpus.jsonl", "-o", "chunks.jsonl", "--mean-units", "1", "--max-units", "1"],
                ["synthesize", "chunks.jsonl", "--teacher", "oracle", "-o", "latents.jsonl"],
            ):
                os.chdir(folder)
                with contextlib.redirect_stdout(io.StringIO()):
                    assert bolt(argv) == 0
        os.chdir(root)
        from bolt.cli import main as bolt

        with contextlib.redirect_stdout(io.StringIO()):
            assert (
                bolt(
                    [
                        "train",
                        "1x/latents.jsonl",
                        "--model",
                        "tiny",
                        "--steps",
                        "5",
                        "--seq-len",
                        "128",
                        "--batch-size",
                        "4",
                        "-o",
                        str(model),
                    ]
                )
                == 0
            )
        baseline, _ = peak_kib([], root)
        commands = {
            "chunk": lambda run: [
                "chunk",
                "corpus.jsonl",
                "-o",
                f"{run}.chunks.jsonl",
                "--mean-units",
                "1",
                "--max-units",
                "1",
            ],
            "synthesize": lambda run: [
                "synthesize",
                "chunks.jsonl",
                "--teacher",
                "oracle",
                "-o",
                f"{run}.latents.jsonl",
            ],
            "estep": lambda run: [
                "estep",
                "chunks.jsonl",
                "--model",
                str(model),
                "-k",
                "2",
                "--max-new-tokens",
                "4",
                "--batch-prompts",
                "64",
                "-o",
                f"{run}.estep.jsonl",
            ],
            "train": lambda run: [
                "train",
                "latents.jsonl",
                "--model",
                "tiny",
                "--steps",
                "20",
                "--seq-len",
                "128",
                "--batch-size",
                "4",
                "-o",
                f"{run}.train",
            ],
        }
        print(
            f"baseline (imports only): {baseline / 1024:.0f} MiB; "
            f"corpus 1x = {args.documents} documents, 12 one-sentence chunks each"
        )
        print(
            f"{'stage':<11} {'1x: above baseline':>19} {'seconds':>8} "
            f"{f'{args.scale}x: above baseline':>20} {'seconds':>8} {'ratio':>6}"
        )
        for stage in stages:
            above, seconds = {}, {}
            for name in sizes:
                peak, seconds[name] = peak_kib(commands[stage](f"measured-{stage}"), root / name)
                above[name] = max(1, peak - baseline)
            small, large = above["1x"], above[f"{args.scale}x"]
            print(
                f"{stage:<11} {small / 1024:>15.1f} MiB {seconds['1x']:>8.1f} "
                f"{large / 1024:>16.1f} MiB {seconds[f'{args.scale}x']:>8.1f} {large / small:>6.2f}"
            )


if __name__ == "__main__":
    main()
