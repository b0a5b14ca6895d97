"""Training throughput of `bolt train`: tokens/s and model FLOPs utilisation (MFU), one
process against N processes (torchrun) in the same run, on the same device.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_throughput.py                    # CPU, tiny
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --layers 4 --hidden 128 --intermediate 384 \\
        --batch-size 16 --steps 40 --warmup 10 --nproc 1 --compile                   # world model, eager vs compiled
    python benchmarks/train_throughput.py --hidden 1024 --layers 24 --heads 16 \\
        --seq-len 2048 --batch-size 8 --precision bf16 --steps 30 --nproc 1          # one GPU, ~400M params

The model is a Llama built from the flags (byte-level vocabulary), trained by the real
`bolt.train.training.train` loop on the embedded world's text (``--layout raw``). Throughput is
taken between the first logged step after ``--warmup`` and the last, so start-up and
first-step allocations are not counted.

MFU = achieved model FLOP/s / peak FLOP/s. Model FLOPs per token = 6 x (parameters without
the input embedding) + 12 x layers x hidden x seq_len (attention scores and values,
forward and backward; no causal discount), as in the PaLM paper's appendix. The peak is
measured here: the best of a few square matmuls in the training dtype on this device
(one GPU's peak x N processes on GPUs; on a CPU all processes share the one measured peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from bolt.apps.world.config import WorldConfig
from bolt.apps.world.world import world_documents
from bolt.core.modeling import byte_llama
from bolt.core.special_tokens import add_latent_tokens
from bolt.train.config import TrainConfig
from bolt.train.training import train

SRC = Path(__file__).resolve().parents[1] / "src"


def matmul_peak(dtype: torch.dtype, device: str, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * n**3 / best


def build_model(args, directory: Path) -> tuple[int, int]:
    """Save a Llama of the requested shape as an HF directory; return (parameters, non-embedding parameters)."""
    shape = dict(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate or 4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
    )
    model, tokenizer = byte_llama(shape, max_positions=max(args.seq_len, 512))
    add_latent_tokens(tokenizer, model)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    total = sum(p.numel() for p in model.parameters())
    return total, total - model.get_input_embeddings().weight.numel()


def write_corpus(path: Path, documents: int) -> Path:
    world = WorldConfig(warm_documents=documents, bootstrap_documents=0, heldout_documents=0, problems_per_document=6)
    with open(path, "w", encoding="utf-8") as handle:
        for i, doc in enumerate(world_documents(world, seed=0)["warm"]):
            handle.write(json.dumps({"id": f"bench-{i}", "text": doc.text}) + "\n")
    return path


def steady_rate(output: Path, warmup: int) -> float:
    """Tokens/s between the first logged step after ``warmup`` and the last (from cumulative metrics)."""
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row["step"] > warmup]
    first, last = rows[0], rows[-1]
    elapsed = last["tokens"] / last["tokens_per_second"] - first["tokens"] / first["tokens_per_second"]
    return (last["tokens"] - first["tokens"]) / elapsed


def run_torchrun(args, model_dir: Path, data: Path, output: Path) -> None:
    threads = max(1, (os.cpu_count() or 1) // args.nproc) if not torch.cuda.is_available() else 1
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": str(threads),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(args.nproc),
        "-m",
        "bolt",
        "train",
        str(data),
        "-o",
        str(output),
        "--model",
        str(model_dir),
        "--layout",
        "raw",
        "--seq-len",
        str(args.seq_len),
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--precision",
        args.precision,
        "--log-every",
        "1",
        "--lr",
        "1e-4",
    ]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, help="MLP width (default: 4 x hidden)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4, help="windows per process per step")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the rate")
    parser.add_argument("--precision", default="no", help="no, bf16 or fp16")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun run (1: single process only)")
    parser.add_argument("--documents", type=int, default=400, help="world documents to train on")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also train the single process through torch.compile and print its ratio to eager",
    )
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision, torch.float32)
    peak = matmul_peak(dtype, device, n=8192 if device == "cuda" else 1024)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params, non_embedding = build_model(args, tmp / "model")
        flops_per_token = 6 * non_embedding + 12 * args.layers * args.hidden * args.seq_len
        data = write_corpus(tmp / "corpus.jsonl", args.documents)
        config = TrainConfig(
            model=str(tmp / "model"),
            layout="raw",
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            steps=args.steps,
            precision=args.precision,
            log_every=1,
            lr=1e-4,
        )
        train(config, data, tmp / "single")
        single = steady_rate(tmp / "single", args.warmup)
        name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"device: {name}; matmul peak ({dtype}): {peak / 1e12:.3f} TFLOP/s")
        print(
            f"model: {params / 1e6:.1f}M params ({non_embedding / 1e6:.1f}M without input embedding), "
            f"{flops_per_token / 1e6:.1f} MFLOP/token; "
            f"seq {args.seq_len} x batch {args.batch_size} per process, precision {args.precision}"
        )
        print(f"1 process   : {single:10.0f} tokens/s  MFU {single * flops_per_token / peak:6.1%}")
        if args.compile:
            started = time.monotonic()
            summary = train(config, data, tmp / "compiled", compile=True)
            compiled = steady_rate(tmp / "compiled", args.warmup)
            setup = time.monotonic() - started - summary["seconds"]
            print(
                f"1 compiled  : {compiled:10.0f} tokens/s  MFU {compiled * flops_per_token / peak:6.1%}  "
                f"({compiled / single:.2f}x eager; "
                f"{summary['seconds'] - summary['tokens'] / compiled:.1f} s more in the first steps, compiling; "
                f"setup {setup:.1f} s)"
            )
        if args.nproc > 1:
            run_torchrun(args, tmp / "model", data, tmp / "multi")
            multi = steady_rate(tmp / "multi", args.warmup)
            total_peak = peak * (args.nproc if device == "cuda" else 1)
            print(
                f"{args.nproc} processes : {multi:10.0f} tokens/s  MFU {multi * flops_per_token / total_peak:6.1%}  "
                f"({multi / single:.2f}x the single process; global batch {args.nproc}x larger)"
            )


if __name__ == "__main__":
    main()
