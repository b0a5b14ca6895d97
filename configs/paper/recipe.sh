#!/usr/bin/env bash
# The paper's setup (METHOD.md, "Paper scale") on one machine with 8 GPUs:
# TinyLlama-1.1B continued pretraining on FineMath-4+, warm start on teacher latents,
# 3 BoLT iterations with K = 4, raw-data baselines (token- and FLOPs-matched), evaluation.
#
#   BASE=./TinyLlama-1.1B TEACHER=./my-instruct-model QUESTIONS=math-questions.jsonl bash configs/paper/recipe.sh
#
# Every step is resumable: rerun the script after an interruption and finished stages are skipped.
# Cost per stage: see "Scaling out" in README.md (GPU-hours estimated from a measured 1-GPU MFU).
set -euo pipefail
BASE=${BASE:?the TinyLlama-1.1B HF directory}
TEACHER=${TEACHER:?an instruction-tuned HF model directory for the warm-start latents}
QUESTIONS=${QUESTIONS:-}            # JSONL of {prompt, answer} for latent-space accuracy (optional)
GPUS=${GPUS:-8}
DATA=${DATA:-data/finemath}
RUNS=${RUNS:-runs/paper}
SEED=${SEED:-0}
ACCELERATE="accelerate launch --config_file configs/accelerate/fsdp-bf16.yaml --num_processes $GPUS"
# batch 192 x 2048 tokens per optimiser step: 8 GPUs x 6 windows x 4 accumulation steps
TRAIN="--seq-len 2048 --batch-size 6 --grad-accum $((192 / GPUS / 6)) --lr 1e-4 --warmup-steps 1000 --weight-decay 0.01 --clip 1.0 --precision bf16 --checkpoint-every 500 --seed $SEED"
# training files are tokenised once into a memory-mapped store shared by the ranks (and, for the
# two raw baselines, by both runs); raise --tokenize-workers to the node's spare cores
TRAIN="$TRAIN --token-cache $RUNS/token-cache --tokenize-workers ${TOKENIZE_WORKERS:-8}"
ESTEP="-k 4 --max-new-tokens 1024 --backend vllm --executor ray --workers $GPUS --gpus-per-worker 1"

# 1. data: disjoint held-out / warm-start (240M tokens) / bootstrap (1.92B tokens) splits
[ -f "$DATA/bootstrap.jsonl" ] || python configs/paper/prepare_finemath.py --tokenizer "$BASE" -o "$DATA"
bolt chunk "$DATA/warm.jsonl" -o "$DATA/warm.chunks.jsonl" --prefix-chunks 1 --seed "$SEED"
bolt chunk "$DATA/bootstrap.jsonl" -o "$DATA/bootstrap.chunks.jsonl" --prefix-chunks 3 --seed "$SEED"

# 2. warm start: teacher latents, then ~2 epochs of thought-augmented text from the base model
bolt synthesize "$DATA/warm.chunks.jsonl" -o "$DATA/warm.latents.jsonl" --teacher hf --teacher-model "$TEACHER" --seed "$SEED"
$ACCELERATE -m bolt train "$DATA/warm.latents.jsonl" --model "$BASE" -o "$RUNS/iter-0" --epochs 2 $TRAIN

# 3. three EM iterations: E-step with the previous model, M-step from the base model again
for i in 1 2 3; do
    bolt estep "$DATA/bootstrap.chunks.jsonl" --model "$RUNS/iter-$((i - 1))" -o "$RUNS/iter-$i.latents.jsonl" --seed $((SEED + i)) $ESTEP
    $ACCELERATE -m bolt train "$RUNS/iter-$i.latents.jsonl" --model "$BASE" -o "$RUNS/iter-$i" --epochs 2 $TRAIN
done

# 4. baselines on the same raw bootstrap text: token-matched (2 epochs of raw) and
#    FLOPs-matched (as many tokens as the last latent M-step trained on)
$ACCELERATE -m bolt train "$DATA/bootstrap.jsonl" --layout raw --model "$BASE" -o "$RUNS/raw-token-matched" --epochs 2 $TRAIN
LATENT_TOKENS=$(python -c "import json; print(json.load(open('$RUNS/iter-3/manifest.json'))['summary']['tokens'])")
$ACCELERATE -m bolt train "$DATA/bootstrap.jsonl" --layout raw --model "$BASE" -o "$RUNS/raw-flops-matched" --tokens "$LATENT_TOKENS" $TRAIN

# 5. evaluation: held-out NLL, ELBO/IWAE bounds, latent-space accuracy (raw baselines answer directly)
QFLAG=${QUESTIONS:+--questions $QUESTIONS}
for run in iter-0 iter-1 iter-2 iter-3; do
    bolt eval "$DATA/heldout.jsonl" --model "$RUNS/$run" $QFLAG --max-latent-tokens 1024 -o "$RUNS/$run-eval"
done
for run in raw-token-matched raw-flops-matched; do
    bolt eval "$DATA/heldout.jsonl" --model "$RUNS/$run" $QFLAG --direct -o "$RUNS/$run-eval"
done
