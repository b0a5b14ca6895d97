"""E-step throughput: bolt's batched, shared-prefill sampler against the code a user would write.

Baselines (same process, same model, same chunks):

- **batched generate** (the one the ratio that matters is against): ``model.generate`` over
  ``--batch-prompts`` left-padded prompts at once with ``num_return_sequences=K``, log q
  gathered from the returned scores, and the joint sequences scored in one batched call
  (``bolt.estep.scoring.score``, by token budget);
- **per sample** (``--per-sample``, slow): every one of the K samples of every chunk drawn on
  its own with ``model.generate`` and its joint sequence scored on its own.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/estep.py [--preset small] [--chunks 32] [-k 4]
    python benchmarks/estep.py --hidden 1024 --layers 24 --heads 16 --chunks 64 --batch-prompts 16 \
        --max-new-tokens 256 --naive-chunks 4                                       # one GPU, ~400M params

Prints chunks/s and sampled tokens/s of both and the ratio. Both sides sample the same
distribution with the same stop rule (EoL or --max-new-tokens); a random-init model rarely
emits EoL, so nearly every latent runs to the budget on both sides.

With ``--backend vllm`` (GPU, vLLM installed) the same chunks also go through the vLLM
backend, whose rate is printed as a ratio to bolt's HF backend in the same run.

``--processes`` also times whole processes on the same chunks, written to a file with the model
saved beside them: ``bolt estep`` (reading the file, loading the model, writing its output and run
directory) against a Python process that loads the same model and runs the batched ``generate``
baseline over the same file. Start-up and I/O count on both sides.
"""

from __future__ import annotations

import argparse
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
from bolt.core.modeling import byte_llama, load_model_and_tokenizer, resolve_device, resolve_dtype
from bolt.core.records import Chunk, Document
from bolt.core.special_tokens import add_latent_tokens, marker_ids
from bolt.estep.config import EStepConfig, SamplingConfig
from bolt.estep.scoring import score
from bolt.estep.stage import chunk_jobs, joint_sequence, latent_body, posterior_prompt, run_batch


def make_documents(n_chunks: int, prefix_tokens: int = 0) -> list[Document]:
    """World text chunks, each with the previous chunk as its prefix, or with ``prefix_tokens`` > 0
    about that many bytes (= tokens under the byte tokenizer) of earlier world text."""
    world = WorldConfig(
        warm_documents=n_chunks + 64, bootstrap_documents=0, heldout_documents=0, problems_per_document=3
    )
    texts = [doc.text for doc in world_documents(world, seed=0)["warm"]]
    documents = []
    for i, text in enumerate(texts[:n_chunks]):
        if prefix_tokens:
            prefix, j = "", i + 1
            while len(prefix.encode()) < prefix_tokens:
                prefix, j = prefix + " " + texts[j % len(texts)], j + 1
            prefix = prefix.encode()[:prefix_tokens].decode(errors="ignore")
        else:
            prefix = texts[i - 1] if i else ""
        documents.append(Document(id=f"bench-{i}", chunks=[Chunk(text=text, prefix=prefix)]))
    return documents


def batched_generate(model, tokenizer, m, jobs, k: int, max_new: int, batch_prompts: int) -> int:
    """``generate`` with ``num_return_sequences=k`` over batches of left-padded prompts, log q from
    its scores, batched scoring of the joint sequences. Returns the number of sampled tokens."""
    sampled_tokens = 0
    pad = tokenizer.pad_token_id
    for begin in range(0, len(jobs), batch_prompts):
        batch = jobs[begin : begin + batch_prompts]
        prompts = [posterior_prompt(job.context, m) for job in batch]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
        out = model.generate(
            ids,
            attention_mask=mask,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=max_new,
            num_return_sequences=k,
            eos_token_id=m.eol,
            pad_token_id=pad,
            output_scores=True,
            return_dict_in_generate=True,
        )
        sampled = out.sequences[:, width:]
        log_probs = (
            torch.log_softmax(torch.stack(out.scores, 1).float(), -1).gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        )
        ended = (
            torch.cumsum((sampled == m.eol).long(), 1) - (sampled == m.eol).long()
        )  # tokens after the first EoL are padding
        log_q = (log_probs * (ended == 0)).sum(1)  # noqa: F841 (the E-step's weights need it; computed as a user would)
        sequences, starts = [], []
        for row in range(sampled.shape[0]):
            tokens = sampled[row][ended[row] == 0].tolist()
            sequence, start = joint_sequence(batch[row // k].context, latent_body(tokens, m), m)
            sequences.append(sequence)
            starts.append(start)
            sampled_tokens += len(tokens)
        score(model, sequences, starts)
    return sampled_tokens


def naive(model, tokenizer, m, jobs, k: int, max_new: int) -> int:
    """Returns the number of sampled tokens."""
    sampled_tokens, log_qs = 0, []
    for job in jobs:
        prompt = torch.tensor([posterior_prompt(job.context, m)], device=model.device)
        for _ in range(k):
            out = model.generate(
                prompt,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=max_new,
                eos_token_id=m.eol,
                pad_token_id=tokenizer.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
            sampled = out.sequences[0, prompt.shape[1] :]
            log_qs.append(
                sum(torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.scores, sampled.tolist()))
            )
            sequence, start = joint_sequence(job.context, latent_body(sampled.tolist(), m), m)
            score(model, [sequence], [start])
            sampled_tokens += len(sampled)
    return sampled_tokens


def load_model(args):
    """The preset or HF directory of ``--preset``, or a Llama of the ``--hidden``/``--layers``/``--heads``
    shape built from a config."""
    if args.hidden:
        shape = dict(
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.heads,
        )
        model, tokenizer = byte_llama(shape)
    else:
        model, tokenizer = load_model_and_tokenizer(args.preset)
    add_latent_tokens(tokenizer, model)
    return model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset", default="small", help="a bolt preset or an HF model directory (ignored with --hidden)"
    )
    parser.add_argument(
        "--hidden", type=int, help="build a Llama of this width from a config instead (with --layers, --heads)"
    )
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto (a GPU if torch sees one), cpu, cuda")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument(
        "--naive-chunks", type=int, help="chunks the per-sample baseline runs (default: all; its rate is per chunk)"
    )
    parser.add_argument(
        "--prefix-tokens",
        type=int,
        default=0,
        help="pad every chunk's prefix to about this many tokens with earlier world text (0: one chunk's worth)",
    )
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("-k", "--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-prompts", type=int, default=8)
    parser.add_argument(
        "--backend", choices=("hf", "vllm"), default="hf", help="vllm: also time the vLLM backend against the HF one"
    )
    parser.add_argument("--per-sample", action="store_true", help="also time the (slow) per-sample generate baseline")
    parser.add_argument(
        "--processes",
        action="store_true",
        help="also time whole processes: `bolt estep` against a script running the batched baseline",
    )
    parser.add_argument(
        "--baseline-process", nargs=2, metavar=("MODEL", "CHUNKS"), help=argparse.SUPPRESS
    )  # the baseline's own process
    args = parser.parse_args()
    if args.baseline_process:
        return baseline_process(args)

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    model, tokenizer = load_model(args)
    model = model.to(device=device, dtype=dtype).eval()
    m = marker_ids(tokenizer)
    config = EStepConfig(
        samples=args.samples,
        sampling=SamplingConfig(max_new_tokens=args.max_new_tokens),
        batch_prompts=args.batch_prompts,
    )
    jobs = list(chunk_jobs(make_documents(args.chunks, args.prefix_tokens), tokenizer, config, window=4096))

    run_batch(model, tokenizer, jobs[:2], m, config)  # warm-up: first-call allocations are not the sampler's cost
    start = time.perf_counter()
    ours_tokens = 0
    for i in range(0, len(jobs), config.batch_prompts):
        ours_tokens += sum(
            r["sampled_tokens"] for r in run_batch(model, tokenizer, jobs[i : i + config.batch_prompts], m, config)
        )
    ours = time.perf_counter() - start

    params = sum(p.numel() for p in model.parameters()) / 1e6
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    shape = f"Llama {args.hidden}x{args.layers}" if args.hidden else f"preset {args.preset}"
    print(
        f"device: {where}, {args.dtype}; model: {shape} ({params:.1f}M params), {len(jobs)} chunks, "
        f"K={args.samples}, {args.max_new_tokens} latent tokens"
    )
    print(
        f"bolt   (batched, shared prefill): {len(jobs) / ours:8.2f} chunks/s  "
        f"({ours_tokens / ours:8.0f} sampled tok/s, {ours_tokens} tokens)"
    )
    start = time.perf_counter()
    batched_tokens = batched_generate(
        model, tokenizer, m, jobs, args.samples, args.max_new_tokens, config.batch_prompts
    )
    batched = time.perf_counter() - start
    print(
        f"generate, batched, K per prompt  : {len(jobs) / batched:8.2f} chunks/s  "
        f"({batched_tokens / batched:8.0f} sampled tok/s, {batched_tokens} tokens)"
    )
    print(f"bolt / batched generate: {batched / ours:.2f}x (chunks/s)")
    if args.per_sample:
        naive_jobs = jobs[: args.naive_chunks] if args.naive_chunks else jobs
        start = time.perf_counter()
        baseline_tokens = naive(model, tokenizer, m, naive_jobs, args.samples, args.max_new_tokens)
        baseline = time.perf_counter() - start
        print(
            f"generate, one call per sample    : {len(naive_jobs) / baseline:8.2f} chunks/s  "
            f"({baseline_tokens / baseline:8.0f} sampled tok/s, {baseline_tokens} tokens)"
        )
        print(f"bolt / per-sample generate: {(len(jobs) / ours) / (len(naive_jobs) / baseline):.2f}x (chunks/s)")
    if args.processes:
        whole_processes(args, model, tokenizer)
    if args.backend == "vllm":
        vllm_seconds, vllm_tokens = time_vllm(model, tokenizer, m, jobs, config)
        print(
            f"vLLM backend                    : {len(jobs) / vllm_seconds:8.2f} chunks/s  "
            f"({vllm_tokens / vllm_seconds:8.0f} sampled tok/s, {vllm_tokens} tokens)"
        )
        print(f"vLLM / bolt HF: {ours / vllm_seconds:.2f}x")


def whole_processes(args, model, tokenizer) -> None:
    """``bolt estep`` and the baseline script, each as its own process on the same chunks file and model directory."""
    from bolt.core.records import write_jsonl

    flags = [
        "-k",
        str(args.samples),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--batch-prompts",
        str(args.batch_prompts),
    ]
    environment = {**os.environ, "BOLT_PROGRESS": "off"}
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        model.save_pretrained(root / "model")
        tokenizer.save_pretrained(root / "model")
        write_jsonl(root / "chunks.jsonl", make_documents(args.chunks, args.prefix_tokens))
        seconds = {}
        for name, argv in (
            (
                "bolt estep",
                [
                    sys.executable,
                    "-m",
                    "bolt",
                    "estep",
                    str(root / "chunks.jsonl"),
                    "--model",
                    str(root / "model"),
                    *flags,
                    "--device",
                    args.device,
                    "--dtype",
                    args.dtype,
                    "-o",
                    str(root / "out.jsonl"),
                ],
            ),
            (
                "batched generate script",
                [
                    sys.executable,
                    __file__,
                    "--baseline-process",
                    str(root / "model"),
                    str(root / "chunks.jsonl"),
                    *flags,
                    "--device",
                    args.device,
                    "--dtype",
                    args.dtype,
                ],
            ),
        ):
            start = time.perf_counter()
            subprocess.run(argv, check=True, env=environment, stdout=subprocess.DEVNULL)
            seconds[name] = time.perf_counter() - start
            print(
                f"{name + ' (whole process)':<33}: {args.chunks / seconds[name]:8.2f} chunks/s  ({seconds[name]:.1f} s)"
            )
        print(
            "bolt estep / batched generate script (whole processes): "
            f"{seconds['batched generate script'] / seconds['bolt estep']:.2f}x"
        )


def baseline_process(args) -> None:
    """What a user's own script would do: load the model, read the chunks, batched ``generate``, score."""
    from bolt.core.records import read_documents

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    model, tokenizer = load_model_and_tokenizer(args.baseline_process[0])
    model = model.to(device=device, dtype=dtype).eval()
    config = EStepConfig(
        samples=args.samples,
        sampling=SamplingConfig(max_new_tokens=args.max_new_tokens),
        batch_prompts=args.batch_prompts,
    )
    jobs = list(chunk_jobs(read_documents(args.baseline_process[1]), tokenizer, config, window=4096))
    with torch.no_grad():
        batched_generate(
            model, tokenizer, marker_ids(tokenizer), jobs, args.samples, args.max_new_tokens, args.batch_prompts
        )


def time_vllm(model, tokenizer, m, jobs, config: EStepConfig) -> tuple[float, int]:
    """The same chunks through the vLLM backend (the model saved to a temporary HF directory)."""
    import tempfile

    from bolt.estep.vllm_backend import VLLMBackend

    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        backend = VLLMBackend(directory, dtype=model.dtype)
        run_batch(backend, tokenizer, jobs[:2], m, config)  # warm-up
        start = time.perf_counter()
        tokens = 0
        for i in range(0, len(jobs), config.batch_prompts):
            tokens += sum(
                r["sampled_tokens"]
                for r in run_batch(backend, tokenizer, jobs[i : i + config.batch_prompts], m, config)
            )
        return time.perf_counter() - start, tokens


if __name__ == "__main__":
    main()
