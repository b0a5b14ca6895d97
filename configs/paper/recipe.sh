#!/usr/bin/env bash
# The paper's experiment (docs/METHOD.md, "Paper scale"): TinyLlama-1.1B continued pretraining on
# FineMath-4+; GPT-4o-mini latents for the warm start (OpenAI Batch API, temperature 0.7); 3 BoLT
# iterations with K = 4 from the posterior; every M-step 13B tokens from the same base; raw
# token- and FLOPs-matched baselines (fresh-raw, WRAP and WRAP-CoT as options); 3 seeds; every model
# evaluated on held-out NLL/IWAE, on lm-eval's GSM8K, MATH and MMLU-STEM (standard and latent
# variants) and by fine-tune-then-evaluate; a decontamination report (13-gram overlap of the corpus
# and all latents with the test sets); `bolt report` over the seeds at the end.
#
#   bash configs/paper/recipe.sh --plan        # every command, with tokens, API cost and GPU-hours; runs nothing
#   BASE_REVISION=<commit> TASK_DATA=data/tasks OPENAI_API_KEY=... bash configs/paper/recipe.sh
#
# Multi-node: run the same command on every node with NODES, NODE_RANK and MAIN_ADDR set (the
# trainings use accelerate's --num_machines / --machine_rank / --main_process_ip; see
# configs/paper/slurm.sbatch). The non-training stages run on node 0 only.
# Every stage is resumable: rerun the script after an interruption and finished stages are kept.
# Every setting below can be overridden from the environment; tests/test_paper_recipe.py runs the
# whole script on a CPU at toy scale (tiny model, oracle teacher, world text) so it cannot rot.
set -euo pipefail
PLAN=0
case "${1:-}" in
    --plan) PLAN=1 ;;
    "") ;;
    *) echo "usage: bash configs/paper/recipe.sh [--plan]" >&2; exit 2 ;;
esac

# --- the model, the data and the seeds -------------------------------------------------------
BASE=${BASE:-TinyLlama/TinyLlama_v1.1}       # hub id or local HF directory (the base of every model)
BASE_REVISION=${BASE_REVISION:-}            # the hub commit the whole run uses (required for a hub id)
DATA=${DATA:-data/finemath}                 # heldout.jsonl, warm.jsonl, bootstrap.jsonl (prepare_finemath.py)
FRESH=${FRESH:-}                            # optional fresh raw documents for the fresh-raw baseline
TASK_DATA=${TASK_DATA:-}                    # DIR/<dataset>/{train,test}.jsonl for the benchmarks (empty: the hub)
RUNS=${RUNS:-runs/paper}
SEEDS=${SEEDS:-0 1 2}
CHUNK_SEED=${CHUNK_SEED:-0}                 # one chunking for every seed: the seeds differ in training and sampling only
CHUNK_FLAGS=${CHUNK_FLAGS:-}                 # extra `bolt chunk` flags (sentences per chunk)

# --- the teacher ----------------------------------------------------------------------------
TEACHER=${TEACHER:-openai}                  # openai (Batch API, the paper), hf, vllm, anthropic or oracle (the toy run)
TEACHER_MODEL=${TEACHER_MODEL:-gpt-4o-mini}
TEACHER_TEMPERATURE=${TEACHER_TEMPERATURE:-0.7}
TEACHER_MAX_TOKENS=${TEACHER_MAX_TOKENS:-1024}   # latents run ~2.3x their chunk: keep this above 2.3x the longest chunk
TEACHER_FLAGS=${TEACHER_FLAGS-"--batch"}         # --batch: the OpenAI Batch API (half price, within 24 h)
BASELINES=${BASELINES:-raw-token raw-flops}      # add fresh-raw (needs FRESH), wrap, wrap-cot

# --- training (the reference's settings) ---------------------------------------------------------
NODES=${NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MAIN_ADDR=${MAIN_ADDR:-127.0.0.1}
MAIN_PORT=${MAIN_PORT:-29500}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
GLOBAL_BATCH=${GLOBAL_BATCH:-192}           # windows per optimiser step, whatever the number of GPUs
MICRO_BATCH=${MICRO_BATCH:-6}               # windows per GPU per forward pass
SEQ_LEN=${SEQ_LEN:-2048}
WARM_TOKENS=${WARM_TOKENS:-800000000}       # the reference's warm start: ~0.8B tokens (~2,000 steps of 192 x 2048)
MSTEP_TOKENS=${MSTEP_TOKENS:-13000000000}   # the reference's M-step: 13B tokens, fixed whatever the latents' length
PRECISION=${PRECISION:-bf16}
TRAIN_EXTRA=${TRAIN_EXTRA:---lr 1e-4 --warmup-steps 1000 --weight-decay 0.01 --clip 1.0 --checkpoint-every 500}
LAUNCH=${LAUNCH:-accelerate launch --config_file configs/accelerate/fsdp-bf16.yaml --num_machines $NODES --machine_rank $NODE_RANK --main_process_ip $MAIN_ADDR --main_process_port $MAIN_PORT --num_processes $((NODES * GPUS_PER_NODE)) -m bolt}

# --- E-step and evaluation ------------------------------------------------------------------
ESTEP_FLAGS=${ESTEP_FLAGS:--k 4 --temperature 1.0 --max-new-tokens 1024 --backend vllm --dtype bfloat16 --executor ray --workers $((NODES * GPUS_PER_NODE)) --gpus-per-worker 1}
LATENT_TASKS=${LATENT_TASKS:-gsm8k_cot,gsm8k_cot_latent,math_cot,math_cot_latent,mmlu_stem_cot,mmlu_stem_cot_latent}
RAW_TASKS=${RAW_TASKS:-gsm8k_cot,math_cot,mmlu_stem_cot}
EVAL_FLAGS=${EVAL_FLAGS:---iwae-samples 1,2,4 --max-latent-tokens 1024}
FINETUNE_TASK=${FINETUNE_TASK:-gsm8k_cot}   # fine-tune-then-evaluate: latent models get its _latent variant
FINETUNE_FLAGS=${FINETUNE_FLAGS:---seeds 1 --samples 4}
TOKENS_PER_GPU_SECOND=${TOKENS_PER_GPU_SECOND:-32000}   # for --plan: README's estimate for TinyLlama on an H100 (30% MFU)

# --- checks -----------------------------------------------------------------------------------
die() { echo "recipe.sh: $*" >&2; exit 2; }
[ "$NODES" -ge 1 ] && [ "$NODE_RANK" -ge 0 ] && [ "$NODE_RANK" -lt "$NODES" ] ||
    die "NODE_RANK=$NODE_RANK must be between 0 and NODES - 1 = $((NODES - 1)) (set both on every node; see configs/paper/slurm.sbatch)."
PROCS=$((NODES * GPUS_PER_NODE))
[ $((GLOBAL_BATCH % (PROCS * MICRO_BATCH))) -eq 0 ] ||
    die "GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of NODES x GPUS_PER_NODE x MICRO_BATCH = $PROCS x $MICRO_BATCH; change MICRO_BATCH (the global batch is never changed silently)."
GRAD_ACCUM=$((GLOBAL_BATCH / (PROCS * MICRO_BATCH)))
REVISION=()
if [ -d "$BASE" ]; then
    [ -z "$BASE_REVISION" ] || die "BASE=$BASE is a local directory; BASE_REVISION only applies to a hub id."
else
    [ -n "$BASE_REVISION" ] || [ "$PLAN" = 1 ] ||
        die "BASE=$BASE is a hub id: pin it with BASE_REVISION=<commit> (the commit hash on the model's hub page), so that every seed and stage uses the same weights."
    REVISION=(--revision "${BASE_REVISION:-<commit>}")
fi
if [ -n "$TASK_DATA" ]; then TASK_DIR=(--data-dir "$TASK_DATA"); else TASK_DIR=(); fi
TRAIN="--seq-len $SEQ_LEN --batch-size $MICRO_BATCH --grad-accum $GRAD_ACCUM --precision $PRECISION $TRAIN_EXTRA --token-cache $RUNS/token-cache"

# --- running, or printing the plan ---------------------------------------------------------------------
gpu_hours() { python3 -c "print(f'{$1 / ($TOKENS_PER_GPU_SECOND * 3600):,.0f}')"; }
TOTAL_TOKENS=0
stage() {  # stage TITLE TOKENS: a heading, with the training's GPU-hours in the plan
    TOTAL_TOKENS=$((TOTAL_TOKENS + ${2:-0}))
    if [ "$PLAN" = 1 ]; then
        if [ -n "${2:-}" ]; then echo "# $1: $(python3 -c "print(f'{$2:,}')") tokens, ~$(gpu_hours "$2") GPU-hours"; else echo "# $1"; fi
    else
        echo "== $1" >&2
    fi
}
run() { if [ "$PLAN" = 1 ]; then echo "$*"; else "$@"; fi; }
on_node0() { if [ "$NODE_RANK" = 0 ] || [ "$PLAN" = 1 ]; then run "$@"; fi; }
wait_for() {  # the other nodes wait for node 0's file before training on it
    [ "$PLAN" = 1 ] || [ "$NODE_RANK" = 0 ] && return 0
    until [ -f "$1" ]; do sleep 60; done
}
train() { wait_for "$1"; run $LAUNCH train "$@" --model "$BASE" "${REVISION[@]}" $TRAIN; }
tokens_of() {  # training tokens a finished run saw (its manifest), for the FLOPs-matched baselines
    if [ "$PLAN" = 1 ]; then echo "$MSTEP_TOKENS"; else python3 -c "import json; print(json.load(open('$1/manifest.json'))['summary']['tokens'])"; fi
}

if [ "$PLAN" = 1 ]; then
    WARM_RAW=${WARM_RAW_TOKENS:-240000000}
    echo "# The paper's recipe at this scale: seeds $SEEDS, $PROCS GPUs ($NODES node(s)), global batch $GLOBAL_BATCH x $SEQ_LEN (micro-batch $MICRO_BATCH, accumulation $GRAD_ACCUM)."
    echo "# Teacher: $TEACHER $TEACHER_MODEL, ~$(python3 -c "print(f'{$WARM_RAW:,}')") raw tokens in, ~2.3x as many latent tokens out;"
    echo "#   at gpt-4o-mini's Batch API prices (\$0.075 / \$0.30 per 1M tokens in / out): ~\$$(python3 -c "print(f'{$WARM_RAW * 0.075e-6 + 2.3 * $WARM_RAW * 0.30e-6:,.0f}')") before the prompt's own tokens;"
    for method in wrap wrap-cot; do
        case " $BASELINES " in *" $method "*)
            echo "# $method rephrasings of the bootstrap split: ~$(python3 -c "print(f'{1920000000:,}')") tokens in and about as many out: ~\$$(python3 -c "print(f'{1.92e9 * 0.075e-6 + 1.92e9 * 0.30e-6:,.0f}')") at the same prices;" ;;
        esac
    done
    echo "#   \`bolt synthesize ... --dry-run\` prices the real chunks exactly. GPU-hours assume $TOKENS_PER_GPU_SECOND tokens/s per GPU (README, Throughput); E-steps are not estimated (measure vLLM with benchmarks/estep.py)."
    [ -n "$BASE_REVISION" ] || [ -d "$BASE" ] || echo "# BASE_REVISION is not set: the real run refuses to start until the base model is pinned."
fi
if [ -z "$TASK_DATA" ]; then  # bolt finetune-eval trains on a local train split; the benchmarks alone can stream from the hub
    echo "# TASK_DATA is not set: the benchmarks are read from the hub and fine-tune-then-evaluate is skipped (set TASK_DATA=DIR with DIR/<dataset>/{train,test}.jsonl)" >&2
fi

# 1. data: disjoint held-out / warm-start / bootstrap splits, chunked once (CHUNK_SEED) for every seed
stage "data"
if [ ! -f "$DATA/bootstrap.jsonl" ]; then on_node0 python configs/paper/prepare_finemath.py --tokenizer "$BASE" -o "$DATA"; fi
on_node0 bolt chunk "$DATA/warm.jsonl" -o "$DATA/warm.chunks.jsonl" --prefix-chunks 1 --seed "$CHUNK_SEED" $CHUNK_FLAGS
on_node0 bolt chunk "$DATA/bootstrap.jsonl" -o "$DATA/bootstrap.chunks.jsonl" --prefix-chunks 3 --seed "$CHUNK_SEED" $CHUNK_FLAGS
on_node0 bolt chunk "$DATA/heldout.jsonl" -o "$DATA/heldout.chunks.jsonl" --prefix-chunks 1 --seed "$CHUNK_SEED" $CHUNK_FLAGS

# 2. teacher latents for the warm-start split, and the rephrasing baselines' text (shared by the seeds)
stage "teacher latents ($TEACHER)"
TEACH=(--teacher "$TEACHER" --teacher-model "$TEACHER_MODEL" --temperature "$TEACHER_TEMPERATURE" --max-new-tokens "$TEACHER_MAX_TOKENS" $TEACHER_FLAGS)
[ "$TEACHER" != oracle ] || TEACH=(--teacher oracle)
on_node0 bolt synthesize "$DATA/warm.chunks.jsonl" -o "$DATA/warm.latents.jsonl" "${TEACH[@]}" --seed "$CHUNK_SEED"
for method in wrap wrap-cot; do
    case " $BASELINES " in *" $method "*)
        on_node0 bolt synthesize "$DATA/bootstrap.jsonl" -o "$DATA/bootstrap.$method.jsonl" --method "$method" "${TEACH[@]}" --seed "$CHUNK_SEED" ;;
    esac
done

# 3. the base model's own row: held-out NLL and the standard tasks, before any training
stage "evaluation of the base model"
on_node0 bolt eval "$DATA/heldout.chunks.jsonl" --model "$BASE" "${REVISION[@]}" --direct --tasks "$RAW_TASKS" "${TASK_DIR[@]}" $EVAL_FLAGS -o "$RUNS/base/eval/base"

for SEED in $SEEDS; do
    OUT="$RUNS/seed-$SEED"
    # 4. warm start on the teacher latents, then 3 EM iterations: E-step with the previous model,
    #    M-step from the base model again on MSTEP_TOKENS tokens of the newly inferred latents
    stage "seed $SEED: warm start" "$WARM_TOKENS"
    train "$DATA/warm.latents.jsonl" -o "$OUT/models/warm_start" --tokens "$WARM_TOKENS" --seed "$SEED"
    previous=warm_start
    for i in 1 2 3; do
        stage "seed $SEED: E-step $i"
        on_node0 bolt estep "$DATA/bootstrap.chunks.jsonl" --model "$OUT/models/$previous" -o "$OUT/latents/em_$i.jsonl" --seed $((SEED * 100 + i)) $ESTEP_FLAGS
        stage "seed $SEED: M-step $i" "$MSTEP_TOKENS"
        train "$OUT/latents/em_$i.jsonl" -o "$OUT/models/em_$i" --tokens "$MSTEP_TOKENS" --seed "$SEED"
        previous="em_$i"
    done

    # 5. baselines on the bootstrap split's raw text (or its rephrasings), FLOPs-matched to em_3
    MATCHED=$(tokens_of "$OUT/models/em_3")
    for baseline in $BASELINES; do
        case $baseline in
            raw-token) stage "seed $SEED: raw_token_matched (2 epochs of raw)" "$((2 * 1920000000))"
                       train "$DATA/bootstrap.jsonl" --layout raw -o "$OUT/models/raw_token_matched" --epochs 2 --seed "$SEED" ;;
            raw-flops) stage "seed $SEED: raw_flops_matched" "$MATCHED"
                       train "$DATA/bootstrap.jsonl" --layout raw -o "$OUT/models/raw_flops_matched" --tokens "$MATCHED" --seed "$SEED" ;;
            fresh-raw) [ -n "$FRESH" ] || die "the fresh-raw baseline needs FRESH=<jsonl of raw documents disjoint from DATA's splits>."
                       stage "seed $SEED: fresh_raw" "$MATCHED"
                       train "$FRESH" --layout raw -o "$OUT/models/fresh_raw" --tokens "$MATCHED" --seed "$SEED" ;;
            wrap|wrap-cot) name=${baseline//-/_}
                       stage "seed $SEED: $name" "$MATCHED"
                       train "$DATA/bootstrap.$baseline.jsonl" --layout raw -o "$OUT/models/$name" --tokens "$MATCHED" --seed "$SEED" ;;
            *) die "unknown baseline $baseline in BASELINES (raw-token, raw-flops, fresh-raw, wrap, wrap-cot)." ;;
        esac
    done

    # 6. every model: held-out NLL and IWAE bounds (latent models), the benchmark tasks, fine-tune-then-evaluate
    stage "seed $SEED: evaluation"
    names="warm_start em_1 em_2 em_3"
    for baseline in $BASELINES; do
        case $baseline in raw-token) names="$names raw_token_matched" ;; raw-flops) names="$names raw_flops_matched" ;; *) names="$names ${baseline//-/_}" ;; esac
    done
    for name in $names; do
        case $name in
            warm_start|em_*) kind=(--tasks "$LATENT_TASKS"); task="${FINETUNE_TASK}_latent" ;;
            *) kind=(--direct --tasks "$RAW_TASKS"); task="$FINETUNE_TASK" ;;
        esac
        on_node0 bolt eval "$DATA/heldout.chunks.jsonl" --model "$OUT/models/$name" "${kind[@]}" "${TASK_DIR[@]}" $EVAL_FLAGS --seed "$SEED" -o "$OUT/eval/$name"
        if [ -n "$TASK_DATA" ]; then
            on_node0 bolt finetune-eval --model "$OUT/models/$name" --task "$task" --data-dir "$TASK_DATA" $FINETUNE_FLAGS --seed "$SEED" -o "$OUT/finetune/$name"
        fi
    done
done

# 7. decontamination: 13-gram overlap of the corpus, the teacher's latents and every E-step's latents
#    with the benchmark test sets, to read before comparing any benchmark number
stage "contamination"
LATENT_FILES=()
for SEED in $SEEDS; do for i in 1 2 3; do LATENT_FILES+=("$RUNS/seed-$SEED/latents/em_$i.jsonl"); done; done
on_node0 bolt contamination "$DATA/warm.latents.jsonl" "$DATA/bootstrap.chunks.jsonl" "${LATENT_FILES[@]}" "${TASK_DIR[@]}" -o "$RUNS/contamination"

# 8. one table over the seeds: every model's metrics as mean ± std, with the base model's row
stage "report"
if [ "$PLAN" = 1 ]; then
    echo "bolt report $RUNS/base/eval/base $RUNS/seed-*/eval/* $RUNS/seed-*/finetune/* -o $RUNS/report"
elif [ "$NODE_RANK" = 0 ]; then
    bolt report "$RUNS/base/eval/base" "$RUNS"/seed-*/eval/* $( [ -z "$TASK_DATA" ] || echo "$RUNS"/seed-*/finetune/* ) -o "$RUNS/report"
fi
if [ "$PLAN" = 1 ]; then
    echo "# total training: $(python3 -c "print(f'{$TOTAL_TOKENS:,}')") tokens, ~$(gpu_hours "$TOTAL_TOKENS") GPU-hours, plus the E-steps and evaluations"
fi
