#!/usr/bin/env bash
# The GPU path in one call: the CUDA tests, `shishu bench` of SmolLM2-135M's shape against the
# shishu-smollm2-135m-instruct-m10 layout (random weights), and the m10 pretraining recipe on one GPU.
#
#   make gpu-carry                                # once, where the package registry is reachable: .whl/ + .gpu_carry/
#   bash recipes/gpu/run_gpu_checks.sh            # on the GPU machine (5-7 minutes on one H100, at most BUDGET_S)
#   PYTHON=.venv/bin/python bash recipes/gpu/run_gpu_checks.sh --cpu   # every step on the CPU, tiny shapes
#
# The GPU machine needs no network and no install: the carried transformers wheel goes into $SITE and the
# package runs from the checkout (PYTHONPATH); SHISHU_CACHE points at the carried .gpu_carry/cache.
# Results go under $OUT (default outputs/gpu-checks) as each step ends: environment.json, steps.jsonl
# (exit code and seconds of every step), <step>.out / <step>.err, test_cuda.xml, bench.json,
# pretrain/{metrics.jsonl,training_summary.json,loss_curve.png}, and summary.md with the figures.
# Every step has its own time limit, cut to what is left of BUDGET_S (default 520 s) for the whole
# script; a failed or timed-out step does not stop the next one.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"

DEVICE=cuda
[[ "${1:-}" == "--cpu" ]] && DEVICE=cpu
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-outputs/gpu-checks}"
SITE="${SITE:-/tmp/site}"
RUN_DIR="${RUN_DIR:-/tmp/shishu-gpu-checks-pretrain}"
BUDGET_S="${BUDGET_S:-520}"
DEADLINE=$(( $(date +%s) + BUDGET_S ))
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

export SHISHU_CACHE="${SHISHU_CACHE:-$REPO/.gpu_carry/cache}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_NO_ADVISORY_WARNINGS=1

# step NAME LIMIT_S COMMAND...: stdout to $OUT/NAME.out, stderr to $OUT/NAME.err, exit code to steps.jsonl
step() {
    local name=$1 limit=$2 left start rc
    shift 2
    left=$(( DEADLINE - $(date +%s) ))
    (( limit > left )) && limit=$left
    if (( limit < 10 )); then
        printf '{"step": "%s", "rc": null, "seconds": 0, "limit": %d, "skipped": "budget spent"}\n' "$name" "$limit" >> "$OUT/steps.jsonl"
        echo "== $name: skipped, the budget is spent"
        return
    fi
    echo "== $name (limit ${limit} s)"
    start=$(date +%s)
    # timeout signals the whole process group: accelerate's worker and inductor's compile workers too
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
    rc=$?
    printf '{"step": "%s", "rc": %d, "seconds": %d, "limit": %d}\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$limit" >> "$OUT/steps.jsonl"
    echo "   exit code $rc after $(( $(date +%s) - start )) s"
}

# ------------------------------------------------------------------------------ transformers wheel
install_wheels() {
    rm -rf "$SITE" && mkdir -p "$SITE"
    unpack() {
        "$PYTHON" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" "$@" ||
            "$PYTHON" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$SITE" "$@"
    }
    unpack .whl/transformers-*.whl
    # The image's huggingface-hub may be older than this transformers accepts: then the carried one goes in.
    if ! PYTHONPATH="$SITE" "$PYTHON" -c "import transformers" 2>/dev/null; then
        echo "transformers refuses the image's huggingface-hub: installing the carried wheel"
        unpack .whl/huggingface_hub-*.whl
    fi
}
rm -f "$OUT/steps.jsonl"
if compgen -G ".whl/transformers-*.whl" > /dev/null; then
    echo "== wheels into $SITE"
    install_wheels > "$OUT/wheels.out" 2>&1 || echo "   installing the wheels failed: see wheels.out"
fi
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"

step environment 60 "$PYTHON" - <<'PY'
import json, os, platform, sys

import accelerate, huggingface_hub, tokenizers, torch, transformers
from transformers.utils import is_flash_attn_2_available

import modeling_shishu
from modeling_shishu import assets

info = {
    "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
    "cuda": torch.version.cuda, "transformers": transformers.__version__, "transformers_path": transformers.__file__,
    "accelerate": accelerate.__version__, "huggingface_hub": huggingface_hub.__version__,
    "tokenizers": tokenizers.__version__, "flash_attn_2": is_flash_attn_2_available(),
    "modeling_shishu_path": modeling_shishu.__file__, "shishu_cache": str(assets.cache_dir()),
    "cpu_count": os.cpu_count(),
}
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    info.update(gpu=properties.name, gpu_memory_gib=properties.total_memory / 2**30, gpu_count=torch.cuda.device_count(),
                bf16=torch.cuda.is_bf16_supported(), capability=list(torch.cuda.get_device_capability(0)))
print(json.dumps(info, indent=2))
PY
cp "$OUT/environment.out" "$OUT/environment.json" 2>/dev/null
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

# ------------------------------------------------------------------------------------- the steps
if [[ $DEVICE == cuda ]]; then
    TEST_ENV=()
    BENCH=(--random-init --baseline smollm2-135m --mlp-layers 6,7,17,18,22,23,25,26,28,29 --share pairs
           --device cuda --dtype bfloat16 --compile --shapes 1x512,32x4096 --repeats 5 --decode-tokens 16
           --train-seq-len 2048 --train-batch 8 --train-compile --no-overhead-check --bandwidth-mib 2048)
    PRETRAIN=()
else
    # Tiny shapes: SmolLM2's config shrunk to 6 layers of d=64 (layers 2-3 a shared MLP-only pair).
    TEST_ENV=(env SHISHU_TEST_DEVICE=cpu)
    "$PYTHON" - "$OUT/tiny-parent" <<'PY'
import sys
from transformers import AutoConfig
from modeling_shishu.assets import fetch_parent

config = AutoConfig.from_pretrained(fetch_parent("smollm2-135m"))
config.update(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16))
config.save_pretrained(sys.argv[1])
PY
    BENCH=(--random-init --baseline "$OUT/tiny-parent" --mlp-layers 2,3 --share pairs
           --device cpu --dtype bfloat16 --compile --shapes 1x32,4x64 --repeats 2 --decode-tokens 2
           --train-seq-len 64 --train-batch 2 --train-compile --no-overhead-check --bandwidth-mib 16 --threads 1)
    PRETRAIN=(--config_overrides "hidden_size=64,intermediate_size=128,num_hidden_layers=6,num_attention_heads=4,num_key_value_heads=2"
              --num_mlp_layers 2 --max_length 128 --per_device_train_batch_size 2 --max_train_samples 16
              --max_steps 6 --logging_steps 2 --warmup_steps 1)
fi

step test_cuda 90 "${TEST_ENV[@]}" "$PYTHON" -m pytest tests/test_cuda.py -p no:cacheprovider --junitxml="$OUT/test_cuda.xml"

step bench 320 "$PYTHON" -m modeling_shishu.cli bench "${BENCH[@]}" --json "$OUT/bench.json"

rm -rf "$RUN_DIR"
step pretrain 100 "$PYTHON" -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 \
    --dynamo_backend no recipes/scripts/pretrain.py --config recipes/shishu-smollm2-135m-instruct-m10/pretrain/config_gpu.yaml \
    --output_dir "$RUN_DIR" "${PRETRAIN[@]}"
mkdir -p "$OUT/pretrain"
for file in run.json metrics.jsonl training_summary.json loss_curve.png; do
    [[ -f "$RUN_DIR/$file" ]] && cp "$RUN_DIR/$file" "$OUT/pretrain/"
done

"$PYTHON" recipes/gpu/summarize.py "$OUT" > "$OUT/summary.md" 2> "$OUT/summary.err"
cat "$OUT/summary.md"
