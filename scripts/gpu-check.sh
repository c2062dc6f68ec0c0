#!/usr/bin/env bash
# The GPU check, as one command (benchmarks/gpu_check.py says what it runs): the cuda-marked tests (FLUX
# included), the chip's bf16 matrix rate, then real-size random-weight SD2 (paper preset), SDXL (paper-sdxl)
# and FLUX.1 Fill (paper-flux), weights drawn on the GPU: our training step against the public recipe's,
# FLOPs and the fraction of the chip's peak, the ten costliest kernels, sampling steps, peak CUDA memory,
# projected minutes per scene; a failed preset bisected by SDPA backend x checkpointing and localised
# (CUDA_LAUNCH_BLOCKING=1). Writes gpu-check.json and gpu-check.md to $OUT (the device tool's folder) or
# runs/gpu-check/ after every stage. Within 8 minutes of GPU time (--budget SECONDS), every stage limited.
#
#   scripts/gpu-check.sh --prepare      where the package registries are: download the wheels a bare GPU
#                                       machine lacks (Python 3.12, torch 2.11 there) into .gpu-wheels/
#   scripts/gpu-check.sh                on the GPU machine: install .gpu-wheels/ (--no-index --no-deps) into
#                                       /tmp/realfill-site if there, then the check; without CUDA: exit 2
#   scripts/gpu-check.sh --cpu-dry-run  the same script end to end on the CPU with the tiny twins (CI runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEELS=.gpu-wheels
# what the GPU image lacks, or has at versions the suite did not pass with; versions from constraints.txt
CARRIED=(diffusers transformers tokenizers peft huggingface_hub hf-xet httpx2 httpcore2 pydantic pydantic_core
         annotated-types typing-inspection tomli_w kornia kornia_rs importlib_metadata lazy-importer truststore typer
         torchao)  # torchao: paper-flux-24gb's int8 transformer (backbone.quantize)

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p "$WHEELS"
    # kept out of git (info/exclude: in a worktree .git is a file, and info/ lives in the common git dir)
    if exclude=$(git rev-parse --git-path info/exclude 2>/dev/null); then
        mkdir -p "$(dirname "$exclude")"
        grep -qx "/$WHEELS/" "$exclude" 2>/dev/null || echo "/$WHEELS/" >> "$exclude"
    fi
    for name in "${CARRIED[@]}"; do
        pin=$(grep -i "^${name}==" constraints.txt || true)
        [[ -n "$pin" ]] || { echo "gpu-check: $name is not pinned in constraints.txt" >&2; exit 2; }
        python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d "$WHEELS" "$pin"
    done
    du -sh "$WHEELS"
    echo "gpu-check: wheels in $WHEELS/; carry it (device tool: carry [\"$WHEELS\"]) and run scripts/gpu-check.sh"
    exit 0
fi

if [[ -x .venv/bin/python ]]; then
    . .venv/bin/activate  # this project's own set-up (scripts/setup.sh)
elif compgen -G "$WHEELS/*.whl" > /dev/null; then
    # a bare GPU machine: the carried wheels, and the checkout itself on the path (plugins/ is the package
    # realfill_plugins, so it is linked under that name)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/realfill-site \
        "$WHEELS"/*.whl
    mkdir -p /tmp/realfill-src
    ln -sfn "$ROOT/realfill" /tmp/realfill-src/realfill
    ln -sfn "$ROOT/plugins" /tmp/realfill-src/realfill_plugins
    export PYTHONPATH="/tmp/realfill-src:/tmp/realfill-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
exec python3 benchmarks/gpu_check.py "$@"
