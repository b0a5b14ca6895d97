"""Fault-injection soak: SIGKILL a real `bolt` command at a random time, rerun it, compare with an uninterrupted run.

    python tests/faults/soak.py --stage estep --trials 20
    python tests/faults/soak.py --stage all --trials 5 --seed 1

For each stage (estep, train, synthesize with the oracle teacher, em on the embedded world,
all on tiny data), one uninterrupted reference run is timed; then each trial starts the same
command in a fresh output directory, kills its process group with SIGKILL after a random
share (5-95%) of the reference's time, reruns the same command to completion, and compares
the output with the reference: records lost, duplicated or reordered (by document id), records
whose content differs, for train and em the final weights (largest absolute difference, within
--tolerance), and whether the rerun could resume at all (exit 0). Prints one row per trial
and a total; exits 1 when any trial lost, duplicated, reordered or could not resume.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("estep", "train", "synthesize", "em")


def environment() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }


def prepare(data: Path) -> dict[str, Path]:
    """Tiny inputs, made once: a world corpus, its chunks, oracle latents and a tiny model trained for 4 steps."""
    marker = data / "ready.json"
    if marker.exists():
        return {name: Path(path) for name, path in json.loads(marker.read_text()).items()}
    code = f"""
import json
from pathlib import Path
from bolt.core.chunking import ChunkConfig, chunk_stage
from bolt.teachers.synthesize import SynthesizeConfig, synthesize_stage
from bolt.teachers import make_teacher
from bolt.train.training import TrainConfig, train
from bolt.apps.world.world import WorldConfig, write_world
d = Path({str(data)!r})
paths = write_world(
    d / "world", WorldConfig(warm_documents=1500, bootstrap_documents=6, heldout_documents=2, questions=4), seed=0
)
chunk_stage(paths["warm"], d / "warm.chunks.jsonl", ChunkConfig(prefix_chunks=1, mean_units=2))
synthesize_stage(make_teacher("oracle"), d / "warm.chunks.jsonl", d / "warm.latents.jsonl", SynthesizeConfig())
train(TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=4, lr=3e-3), d / "warm.latents.jsonl", d / "model")
out = {{
    "chunks": str(d / "warm.chunks.jsonl"),
    "bootstrap": str(paths["bootstrap_chunks"]),
    "latents": str(d / "warm.latents.jsonl"),
    "model": str(d / "model"),
}}
(d / "ready.json").write_text(json.dumps(out))
"""
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code], check=True, env=environment(), cwd=ROOT, stdout=subprocess.DEVNULL)
    return {name: Path(path) for name, path in json.loads(marker.read_text()).items()}


def command(stage: str, inputs: dict[str, Path], out: Path) -> tuple[list[str], Path]:
    """The argv of ``stage`` writing under ``out``, and the output to compare."""
    bolt = [sys.executable, "-m", "bolt"]
    if stage == "estep":
        return [
            *bolt,
            "estep",
            str(inputs["bootstrap"]),
            "--model",
            str(inputs["model"]),
            "-k",
            "2",
            "--max-new-tokens",
            "24",
            "--batch-prompts",
            "1",
            "-o",
            str(out / "l.jsonl"),
        ], out / "l.jsonl"
    if stage == "synthesize":
        return [
            *bolt,
            "synthesize",
            str(inputs["chunks"]),
            "--teacher",
            "oracle",
            "--batch-size",
            "1",
            "-o",
            str(out / "l.jsonl"),
        ], out / "l.jsonl"
    if stage == "train":
        return [
            *bolt,
            "train",
            str(inputs["latents"]),
            "--model",
            "tiny",
            "--seq-len",
            "64",
            "--batch-size",
            "2",
            "--steps",
            "40",
            "--lr",
            "3e-3",
            "--checkpoint-every",
            "4",
            "--log-every",
            "1",
            "-o",
            str(out / "m"),
        ], out / "m"
    if stage == "em":
        return [
            *bolt,
            "em",
            "--iterations",
            "1",
            "-k",
            "2",
            "--epochs",
            "0.25",
            "--max-latent-tokens",
            "12",
            "--seq-len",
            "64",
            "--batch-size",
            "4",
            "-o",
            str(out / "em"),
        ], out / "em"
    raise ValueError(stage)


def read_ids(path: Path) -> tuple[list[str], dict[str, str]]:
    """Document ids in file order, and each id's record (its last) as canonical JSON."""
    ids, records = [], {}
    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            row = json.loads(line)
            ids.append(str(row["id"]))
            records[str(row["id"])] = json.dumps(row, sort_keys=True)
    return ids, records


def weights_difference(a: Path, b: Path) -> float:
    from safetensors.numpy import load_file

    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if left.keys() != right.keys():
        return float("inf")
    return max(float(abs(left[k].astype("float64") - right[k].astype("float64")).max()) for k in left)


@dataclass
class Trial:
    stage: str
    kill_after: float
    killed: bool = False
    resumed: bool = False
    lost: int = 0
    duplicated: int = 0
    reordered: bool = False
    differ: int = 0
    weights: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def compare_records(trial: Trial, reference: Path, output: Path) -> None:
    ref_ids, ref_records = read_ids(reference)
    ids, records = read_ids(output)
    trial.lost += len(set(ref_ids) - set(ids))
    trial.duplicated += len(ids) - len(set(ids))
    common = [i for i in ids if i in ref_records]
    trial.reordered = trial.reordered or common != [i for i in ref_ids if i in set(ids)]
    trial.differ += sum(records[i] != ref_records[i] for i in set(ids) & set(ref_ids))


def compare(stage: str, trial: Trial, reference: Path, output: Path) -> None:
    if stage in ("estep", "synthesize"):
        compare_records(trial, reference, output)
    elif stage == "train":
        trial.weights = weights_difference(reference, output)
        steps = [
            json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines() if '"step"' in line
        ]
        ref_steps = [
            json.loads(line)["step"]
            for line in (reference / "metrics.jsonl").read_text().splitlines()
            if '"step"' in line
        ]
        trial.lost += len(set(ref_steps) - set(steps))  # metrics lines, by step
        trial.duplicated += len(steps) - len(set(steps))
        trial.reordered = steps != sorted(steps)
    elif stage == "em":
        for name in sorted(p.name for p in (reference / "latents").glob("*.jsonl")):
            compare_records(trial, reference / "latents" / name, output / "latents" / name)
        trial.weights = max(
            weights_difference(model, output / "models" / model.name)
            for model in (reference / "models").iterdir()
            if model.is_dir()
        )


def run(argv: list[str], timeout: float) -> tuple[int, float, str]:
    started = time.monotonic()
    result = subprocess.run(argv, env=environment(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return result.returncode, time.monotonic() - started, result.stderr


def trial_run(
    stage: str,
    inputs: dict[str, Path],
    work: Path,
    reference: Path,
    reference_seconds: float,
    rng: random.Random,
    tolerance: float,
) -> Trial:
    out = work / f"trial-{rng.randrange(10**9)}"
    out.mkdir()
    argv, output = command(stage, inputs, out)
    trial = Trial(stage, kill_after=round(rng.uniform(0.05, 0.95) * reference_seconds, 2))
    started = time.monotonic()
    process = subprocess.Popen(
        argv, env=environment(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        process.wait(timeout=trial.kill_after)
        trial.notes.append("finished before the kill")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the command and any worker it started
        process.wait()
        trial.killed = True
    code, _, stderr = run(argv, timeout=max(600.0, 20 * reference_seconds))
    trial.seconds = round(time.monotonic() - started, 1)
    trial.resumed = code == 0
    if not trial.resumed:
        trial.notes.append(f"rerun exit {code}: {stderr.strip().splitlines()[-1:]}")
        return trial
    compare(stage, trial, reference, output)
    if trial.weights is not None and trial.weights > tolerance:
        trial.notes.append(f"weights differ by {trial.weights:.2e} > {tolerance:g}")
    shutil.rmtree(out, ignore_errors=True)
    return trial


def soak(
    stage: str, trials: int, work: Path, inputs: dict[str, Path], rng: random.Random, tolerance: float, echo=print
) -> list[Trial]:
    reference_dir = work / f"reference-{stage}"
    shutil.rmtree(reference_dir, ignore_errors=True)
    reference_dir.mkdir(parents=True)
    argv, reference = command(stage, inputs, reference_dir)
    code, seconds, stderr = run(argv, timeout=3600)
    if code != 0:
        raise SystemExit(f"{stage}: the uninterrupted reference run failed (exit {code}): {stderr.strip()[-2000:]}")
    echo(f"{stage}: reference run {seconds:.1f} s")
    results = []
    for number in range(trials):
        trial = trial_run(stage, inputs, work, reference, seconds, rng, tolerance)
        results.append(trial)
        weights = "" if trial.weights is None else f"{trial.weights:.1e}"
        echo(
            f"{stage:<10} {number + 1:>3} {trial.kill_after:>8.2f} {trial.killed!s:>6} {trial.resumed!s:>7} "
            f"{trial.lost:>4} {trial.duplicated:>4} "
            f"{trial.reordered!s:>9} {trial.differ:>6} {weights:>8} {trial.seconds:>6}  {'; '.join(trial.notes)}"
        )
    return results


def failed(trial: Trial, tolerance: float) -> bool:
    return (
        not trial.resumed
        or trial.lost
        or trial.duplicated
        or trial.reordered
        or trial.differ
        or (trial.weights or 0.0) > tolerance
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--stage", default="all", choices=(*STAGES, "all"))
    parser.add_argument("--trials", type=int, default=5, help="SIGKILL/resume trials per stage (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times (default: 0)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest absolute weight difference from the reference (default: 1e-4)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where data and runs go (default: a temporary directory, removed)"
    )
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bolt-soak-"))
    try:
        inputs = prepare(work / "data")
        rng = random.Random(args.seed)
        print(
            f"{'stage':<10} {'#':>3} {'kill s':>8} {'killed':>6} {'resumed':>7} {'lost':>4} {'dup':>4} "
            f"{'reordered':>9} {'differ':>6} {'weights':>8} {'s':>6}  notes"
        )
        results = []
        for stage in STAGES if args.stage == "all" else (args.stage,):
            results += soak(stage, args.trials, work, inputs, rng, args.tolerance)
        print("\nstage      trials killed lost dup reordered differ not-resumed max-weight-diff")
        for stage in dict.fromkeys(t.stage for t in results):
            rows = [t for t in results if t.stage == stage]
            weights = [t.weights for t in rows if t.weights is not None]
            print(
                f"{stage:<10} {len(rows):>6} {sum(t.killed for t in rows):>6} {sum(t.lost for t in rows):>4} "
                f"{sum(t.duplicated for t in rows):>3} "
                f"{sum(t.reordered for t in rows):>9} {sum(t.differ for t in rows):>6} "
                f"{sum(not t.resumed for t in rows):>11} "
                f"{(f'{max(weights):.1e}' if weights else '-'):>15}"
            )
        return 1 if any(failed(t, args.tolerance) for t in results) else 0
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
