#!/usr/bin/env bash
# The GPU numbers in docs/PERFORMANCE.md, in one go, on one GPU with torch, transformers and accelerate
# installed (bolt from this checkout through PYTHONPATH; `pip install -e .` works as well):
#
#     bash benchmarks/gpu.sh [OUT_DIR]
#
# 1. training throughput and MFU of a ~400M-parameter Llama built from a config (bf16, batch 8 and 16);
# 2. E-step throughput of the HF backend on the same shape (bf16, 16 and 64 chunks at once),
#    against per-sample generate;
# 3. the CLI on the GPU end to end: world data, FSDP2 + bf16 training through
#    `accelerate launch` (1 process), the saved HF directory reloaded by `bolt estep --device cuda`
#    and `bolt eval --device cuda`;
# 4. the quick test subset of the stages that place models, run with the GPU visible.
# Each step writes its log to OUT_DIR; a failing step does not stop the later ones.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT_DIR/NAME.log
    local name=$1 seconds=$2
    shift 2
    echo "=== $name"
    timeout "$seconds" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    grep -v -E "it/s\]|s/it\]|^\s*$" "$out/$name.log" | tail -n 25
    echo "=== $name: exit $rc"
    [ $rc -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import sys, torch, transformers, accelerate; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" | tee -a "$out/device.txt"

for batch in 8 16; do
    step "train_throughput_b$batch" 240 python3 benchmarks/train_throughput.py --hidden 1024 --layers 24 --heads 16 --seq-len 2048 \
        --batch-size "$batch" --precision bf16 --steps 30 --warmup 5 --nproc 1 --documents 2000
done
step estep_p16 240 python3 benchmarks/estep.py --hidden 1024 --layers 24 --heads 16 --dtype bfloat16 --chunks 64 --batch-prompts 16 \
    --max-new-tokens 256 --per-sample --naive-chunks 2
step estep_p64 240 python3 benchmarks/estep.py --hidden 1024 --layers 24 --heads 16 --dtype bfloat16 --chunks 128 --batch-prompts 64 \
    --max-new-tokens 256

work="$out/cli"
rm -rf "$work" && mkdir -p "$work"
step cli_data 120 python3 - "$work" <<'EOF'
import sys
from pathlib import Path
from bolt.teachers.synthesize import SynthesizeConfig, synthesize_stage
from bolt.teachers import make_teacher
from bolt.apps.world.world import write_world
from bolt.apps.world.config import WorldConfig
work = Path(sys.argv[1])
paths = write_world(work / "world", WorldConfig(warm_documents=50, bootstrap_documents=16, heldout_documents=4, questions=32), seed=0)
synthesize_stage(make_teacher("oracle"), paths["warm_chunks"], work / "warm.latents.jsonl", SynthesizeConfig())
print({name: str(path) for name, path in paths.items()})
EOF
step cli_train_fsdp 180 python3 -m accelerate.commands.launch --config_file configs/accelerate/fsdp-bf16.yaml --num_processes 1 \
    -m bolt train "$work/warm.latents.jsonl" --model small -o "$work/model" --steps 40 --seq-len 256 --batch-size 16 --lr 3e-3 --log-every 10
step cli_estep 120 python3 -m bolt estep "$work/world/bootstrap.chunks.jsonl" --model "$work/model" -k 4 --max-new-tokens 64 --device cuda -o "$work/latents.jsonl"
step cli_eval 120 python3 -m bolt eval "$work/world/heldout.chunks.jsonl" --questions "$work/world/questions.jsonl" --model "$work/model" \
    --device cuda --max-latent-tokens 64 -o "$work/eval"
step tests 150 python3 -m pytest -q -x -p no:cacheprovider -m "not slow" tests/test_sampling.py tests/test_estep.py tests/test_likelihood.py tests/test_cli.py
exit $status
