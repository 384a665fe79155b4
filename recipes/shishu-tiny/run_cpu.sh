#!/usr/bin/env bash
# Every training stage end to end on a CPU, two processes (DDP over gloo), offline defaults:
#   1. pretrain a tiny ShishuLM from scratch on Shakespeare;
#   2. pretrain a tiny all-attention parent and export it as a plain Llama checkpoint;
#   3. heal: convert that parent (top 2 of 4 layers MLP-only, shared) and distill it back towards the parent;
#   4. instruction-tune the healed model with LoRA on ShareGPT (research-only data).
#
#   recipes/shishu-tiny/run_cpu.sh                  # the recipes as written (about 15 minutes on 2 free cores)
#   MAX_STEPS=20 recipes/shishu-tiny/run_cpu.sh     # a quick smoke run of every stage
#
# Outputs go to $OUT (default outputs/shishu-tiny). Re-running the script continues an interrupted stage
# from its last checkpoint and skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/../.."

export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
BIN="$(dirname "$(command -v python)")"
[[ -x .venv/bin/accelerate ]] && BIN=.venv/bin
LAUNCH=("$BIN/accelerate" launch --config_file recipes/accelerate_configs/cpu_ddp.yaml --main_process_port "${PORT:-29517}")
OUT="${OUT:-outputs/shishu-tiny}"
STEPS=(${MAX_STEPS:+--max_steps "$MAX_STEPS"})

echo "== 1/4 pretrain a tiny ShishuLM"
"${LAUNCH[@]}" recipes/scripts/pretrain.py --config recipes/shishu-tiny/pretrain/config.yaml \
    --output_dir "$OUT/pretrain" "${STEPS[@]}"

echo "== 2/4 pretrain a tiny all-attention parent, export it as Llama"
"${LAUNCH[@]}" recipes/scripts/pretrain.py --config recipes/shishu-tiny/pretrain/config.yaml \
    --num_mlp_layers 0 --output_dir "$OUT/parent-shishu" "${STEPS[@]}"
[[ -d "$OUT/parent" ]] || "$BIN/shishu" export-llama "$OUT/parent-shishu/final" --out "$OUT/parent"

echo "== 3/4 heal: convert the parent and distill"
"${LAUNCH[@]}" recipes/scripts/distill.py --config recipes/shishu-tiny/distill/config.yaml \
    --teacher_name_or_path "$OUT/parent" --output_dir "$OUT/distill" "${STEPS[@]}"

echo "== 4/4 instruction tuning (LoRA)"
"${LAUNCH[@]}" recipes/scripts/sft.py --config recipes/shishu-tiny/sft/config.yaml \
    --model_name_or_path "$OUT/distill/final" --output_dir "$OUT/sft" "${STEPS[@]}"

echo "== done: $OUT/{pretrain,distill,sft}/final, each with metrics.jsonl and loss_curve.png"
