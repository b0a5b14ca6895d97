"""Memory and time of `bolt train`'s data path: tokenising every document in memory against building and
mapping a token store, on the embedded world's documents with oracle latents (bolt.latents/1).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/token_store.py --documents 50000 200000

For each corpus size, the paths run one after the other, each in a fresh Python process so
that its peak resident memory (``VmHWM`` of /proc/self/status: ``ru_maxrss`` would count
the parent's memory, which Linux carries over fork and exec) is its own:

    memory    read every document, ``tokenize_document`` each, count an epoch by rendering every
              document, take the first --windows windows (the data path without a token store)
    build     stream the file into a token store in this one process
    build-N   the same with N tokenising worker processes (--workers; the reading stays in the
              main process; its RSS is the main process's, each worker's is given apart)
    open      map the store, count an epoch from its offsets, take the first --windows windows
              (what every process of `bolt train` does, the builder included, after the build)

Each line gives seconds and peak RSS, and the RSS above a process that has only imported
the same modules (``baseline``); ratios are against ``memory`` in the same run. The windows
and the epoch size of ``memory`` and ``open`` are checked to be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from bolt.apps.world.config import WorldConfig
from bolt.apps.world.world import oracle_latent, world_documents
from bolt.core.layouts import Layout, render, tokenize_document
from bolt.core.modeling import byte_tokenizer
from bolt.core.records import Document, read_documents, write_jsonl
from bolt.core.special_tokens import LATENT_TOKENS, marker_ids
from bolt.core.token_store import StoreKey, open_token_store
from bolt.train.config import TrainConfig
from bolt.train.training import window_stream

SRC = Path(__file__).resolve().parents[1] / "src"


def write_corpus(path: Path, documents: int) -> int:
    """World documents (12 sentences, one per chunk) with the oracle's latent on every chunk; returns the
    file's bytes."""
    world = WorldConfig(warm_documents=documents, bootstrap_documents=0, heldout_documents=0)
    rows = world_documents(world, seed=0)["warm"]
    for document in rows:
        for chunk in document.chunks:
            chunk.latent = oracle_latent(chunk.prefix, chunk.text)
    write_jsonl(path, (Document(d.id, d.chunks, d.meta) for d in rows))
    return path.stat().st_size


def tokenizer():
    marked = byte_tokenizer()
    marked.add_special_tokens({"additional_special_tokens": list(LATENT_TOKENS)}, replace_extra_special_tokens=False)
    return marked


def memory_mib() -> dict[str, float]:
    """Peak resident memory since exec, and of the memory resident now: the process's own (anonymous) and mapped
    files' pages (the store's, shared by the processes of a machine). Linux; ``ru_maxrss`` alone elsewhere."""
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    except OSError:
        return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    kib = {key: int(status[key].split()[0]) / 1024 for key in ("VmHWM", "RssAnon", "RssFile")}
    return {"peak_rss_mib": kib["VmHWM"], "anon_mib": kib["RssAnon"], "file_mib": kib["RssFile"]}


def child(path: Path, store: Path, mode: str, windows: int, config: TrainConfig, workers: int) -> dict:
    tok = tokenizer()
    markers = marker_ids(tok)
    layout = Layout(config.layout)
    started = time.perf_counter()
    result: dict = {}
    if mode == "memory":
        documents = read_documents(path, require_latents=True)
        tokenized = [tokenize_document(tok, d, with_latents=True) for d in documents]
        result["tokens_per_epoch"] = sum(
            len(render(d, layout, markers, np.random.default_rng([config.seed, 0, i]), config.raw_ratio))
            for i, d in enumerate(tokenized)
        )
        stream = window_stream(tokenized, config, markers)
        result["checksum"] = sum(sum(next(stream)) for _ in range(windows))
    elif mode.startswith("build"):
        opened = open_token_store(
            path, tok, store, StoreKey.of(path, tok), require_latents=True, workers=workers if mode != "build" else 1
        )
        result["tokens"] = opened.header["tokens"]
        result["worker_peak_rss_mib"] = (
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        )  # an upper bound (see above)
    elif mode == "open":
        opened = open_token_store(path, tok, store, StoreKey.of(path, tok), build=False, require_latents=True)
        result["tokens_per_epoch"] = opened.tokens_per_epoch(layout, markers, config.seed, config.raw_ratio)
        stream = window_stream(opened.documents(opened.with_latents(layout)), config, markers)
        result["checksum"] = sum(sum(next(stream)) for _ in range(windows))
    result["seconds"] = time.perf_counter() - started
    return {**result, **memory_mib()}


def run_child(args, path: Path, store: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TQDM_DISABLE": "1"}
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--data",
        str(path),
        "--store",
        str(store),
        "--windows",
        str(args.windows),
        "--seq-len",
        str(args.seq_len),
        "--layout",
        args.layout,
        "--workers",
        str(args.workers),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--documents", type=int, nargs="+", default=[2000], help="corpus sizes in world documents (default: 2000)"
    )
    parser.add_argument("--windows", type=int, default=1000, help="windows taken after opening (default: 1000)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--layout", default="random")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="tokenising processes of build-N (default: one per CPU)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = TrainConfig(layout=args.layout, seq_len=args.seq_len, seed=0)
    if args.child:
        print(json.dumps(child(args.data, args.store, args.child, args.windows, config, args.workers)))
        return

    print(
        f"{os.cpu_count()} CPUs; layout {args.layout}, seq_len {args.seq_len}, first {args.windows} windows; "
        "byte-level tokenizer (uint16 store)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for documents in args.documents:
            path = Path(tmp) / f"world-{documents}.latents.jsonl"
            size = write_corpus(path, documents)
            store = Path(tmp) / f"store-{documents}"
            modes = ["baseline", "memory", "build", *([f"build-{args.workers}"] if args.workers > 1 else []), "open"]
            results = {}
            for mode in modes:
                if mode.startswith("build"):
                    shutil.rmtree(store, ignore_errors=True)  # each build starts from nothing
                results[mode] = run_child(args, path, store, mode)
            baseline, memory, opened = results["baseline"], results["memory"], results["open"]
            assert (
                memory["tokens_per_epoch"] == opened["tokens_per_epoch"] and memory["checksum"] == opened["checksum"]
            ), ("the paths disagree", results)
            store_bytes = sum(p.stat().st_size for p in store.iterdir())
            print(
                f"\n{documents} documents: {size / 2**20:.0f} MiB of JSONL, "
                f"{results['build']['tokens']:,} tokens stored ({store_bytes / 2**20:.0f} MiB), "
                f"{memory['tokens_per_epoch']:,} tokens per epoch; imports alone: {baseline['peak_rss_mib']:.0f} MiB"
            )
            for mode in modes[1:]:
                row = results[mode]
                above = row["peak_rss_mib"] - baseline["peak_rss_mib"]
                ratio = (
                    ""
                    if mode == "memory"
                    else (
                        f"  time x{row['seconds'] / memory['seconds']:.3f}, "
                        f"RSS above imports x{above / (memory['peak_rss_mib'] - baseline['peak_rss_mib']):.3f}"
                    )
                )
                workers = f"; each worker <= {row['worker_peak_rss_mib']:.0f} MiB" if mode.startswith("build-") else ""
                now = (
                    f"; at the end {row['anon_mib'] - baseline['anon_mib']:+.0f} MiB own, "
                    f"{row['file_mib'] - baseline['file_mib']:+.0f} MiB of mapped files"
                    if "anon_mib" in row
                    else ""
                )
                print(
                    f"  {mode:8s} {row['seconds']:8.2f} s  peak RSS {row['peak_rss_mib']:8.0f} MiB "
                    f"({above:+8.0f} above imports){ratio}{workers}{now}"
                )


if __name__ == "__main__":
    main()
