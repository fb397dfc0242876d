#!/usr/bin/env bash
# The GPU benchmark on any machine with an NVIDIA GPU and only this project's tree.
#
#   bench/device_gpu.sh prepare [PYTHON_VERSION]   # here, with the registry: wheels -> build/gpu-wheels
#   bench/device_gpu.sh run [gpu_worker.py flags]  # there, offline: install them, run the benchmark
#   bench/device_gpu.sh prepare-check [VERSION]    # here: the CUDA tests' wheels -> build/gpu-check
#   bench/device_gpu.sh check                      # there: the segmentation tests that need CUDA
#   bench/device_gpu.sh check-models               # there, with build/gpu-wheels: the model runner's
#   bench/device_gpu.sh exec CMD...                # there: CMD in the benchmark's environment
#
# A CUDA machine's image brings its own Python with torch and numpy (and often nothing can be
# fetched there); what bench/gpu_worker.py needs beyond them is bench/gpu_requirements.txt. `prepare`
# downloads exactly those wheels, for the device's Python (3.12 unless told) and manylinux x86_64,
# into build/gpu-wheels (ignored by git; about 51 MB, refused above 60 MB). Carry that folder with
# the tree (the device tool's `carry: ["build/gpu-wheels"]`), then `run` installs the wheels with no
# index into a folder beside the image's own packages (torch stays the image's CUDA build) and runs
# bench/gpu_worker.py on CUDA: ours vs MONAI's sliding_window_inference in fp32 and bf16, and the
# worker's studies per second. `run` refuses to start without a CUDA device unless
# `--device cpu` is passed (how this script is checked on a machine with no GPU). `exec` runs any
# command (another benchmark) in the same environment.
#
# `check` runs the segmentation tests that skip without CUDA. They need SimpleITK (tissue-seg's N4;
# a 53 MB wheel) but not moto, botocore or MONAI, so they have their own, smaller set:
# bench/gpu_check_requirements.txt and the template's T1 (not the 11 MB nilearn wheel),
# which `prepare-check` puts in build/gpu-check (carry that folder instead) and `check` lays out
# where infra.local.samples looks for them.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS="${GPU_WHEELS:-build/gpu-wheels}"
REQUIREMENTS=bench/gpu_requirements.txt
MAX_MB=60
case "${1:-}" in
  # 60 again: the device tool carries at most 64 MiB, the tree (~2 MB) included.
  prepare-check | check) WHEELS="${GPU_WHEELS:-build/gpu-check}" REQUIREMENTS=bench/gpu_check_requirements.txt ;;
esac

prepare() {
  local version="${1:-3.12}" pip="${PIP:-python3 -m pip}"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  # --no-deps: the list is the closure; resolving would pull torch (gigabytes) in through monai.
  $pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version "$version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --dest "$WHEELS" -r "$REQUIREMENTS"
  if [ "$REQUIREMENTS" = bench/gpu_check_requirements.txt ]; then
    # The template's files out of the nilearn wheel the project pins, as the analysis images do.
    local pin
    pin=$(grep -o '"nilearn==[^"]*"' pyproject.toml | tr -d '"')
    $pip download --quiet --no-deps --dest "$WHEELS/nilearn" "$pin"
    python3 layers/voxelpipe/python/voxelpipe/registration/template.py "$WHEELS"/nilearn/*.whl "$WHEELS/template" >/dev/null
    rm -f "$WHEELS"/template/*_gm_* "$WHEELS"/template/*_wm_* # the CUDA tests read the T1 only
    rm -rf "$WHEELS/nilearn"
  fi
  local mb
  mb=$(du -sm "$WHEELS" | cut -f1)
  echo "device_gpu: $(ls "$WHEELS" | wc -l) wheels, ${mb} MB in $WHEELS for Python $version"
  if [ "$mb" -gt "$MAX_MB" ]; then
    echo "device_gpu: $WHEELS is over ${MAX_MB} MB: trim $REQUIREMENTS" >&2
    exit 1
  fi
}

# The benchmark's environment on the device: the image's own Python (its CUDA torch; often itself
# a venv, so no venv is layered over it) with the carried wheels installed offline into a folder put
# first on PYTHONPATH; made once per machine, reused by each verb.
ENV_DIR=/tmp/voxelpipe-gpu-${WHEELS##*/}

setup() {
  local python
  python=$(command -v "${DEVICE_PYTHON:-python3}")
  [ -f "$ENV_DIR/.ready" ] && return 0
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "device_gpu: no wheels in $WHEELS: run 'bench/device_gpu.sh prepare' first and carry the folder" >&2
    exit 2
  fi
  local wanted
  wanted=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if ! ls "$WHEELS"/*"cp${wanted/./}"*.whl >/dev/null 2>&1; then
    echo "device_gpu: the wheels in $WHEELS are not for Python $wanted: prepare them with 'prepare $wanted'" >&2
    exit 2
  fi
  "$python" -c 'import torch' || { echo "device_gpu: $python has no torch" >&2; exit 2; }
  rm -rf "$ENV_DIR" && mkdir -p "$ENV_DIR/bin"
  "$python" -m pip install --quiet --no-index --no-deps --target "$ENV_DIR/site" "$WHEELS"/*.whl
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$python" >"$ENV_DIR/bin/python" && chmod +x "$ENV_DIR/bin/python"
  if [ -d "$WHEELS/template" ]; then
    # Where infra.local.samples finds the MNI152 T1 (nilearn's data folder, by path only).
    mkdir -p "$ENV_DIR/site/nilearn/datasets/data" && touch "$ENV_DIR/site/nilearn/__init__.py"
    cp "$WHEELS"/template/*.nii.gz "$ENV_DIR/site/nilearn/datasets/data/"
    in_env python -c 'import nibabel, SimpleITK, infra.local.samples as s; assert s.mni152_t1_path().is_file()'
  else
    in_env python -c 'import monai, moto, nibabel, pydicom, pynamodb, aws_lambda_powertools' # fail early
  fi
  # What the image lacks or has too old shows here (torch's CUDA packages aside).
  in_env python -m pip check 2>&1 | grep -v -i "torch\|nvidia\|triton" | sed "s/^/device_gpu: pip check: /" || true
  echo "device_gpu: $(in_env python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)')"
  touch "$ENV_DIR/.ready"
}

in_env() {
  PATH="$ENV_DIR/bin:$PATH" PYTHONPATH="$ENV_DIR/site:$PWD/layers/voxelpipe/python:$PWD" "$@"
}

need_cuda() {
  in_env python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "device_gpu: no CUDA device visible to torch (pass --device cpu to check the script)" >&2; exit 2; }
}

run() {
  setup
  [[ " $* " == *" --device cpu "* ]] || need_cuda
  in_env python bench/gpu_worker.py "$@"
}

# The tests that skip without CUDA, without the conftest files (those load the local cloud, which
# needs CDK): `check` the segmentation's (torch labelling, tissue-seg on the GPU against the CPU)
# in the CUDA tests' environment; `check-models` the model runners' (sliding window and whole
# volume in bf16), which need the model cache's botocore and MONAI: the benchmark's environment.
check() {
  setup
  need_cuda
  in_env python -m pytest --noconftest -p no:cacheprovider -q -rs \
    tests/unit/test_segmentation.py tests/integration/test_segmentation_mni.py -k "cuda" "$@"
}

check_models() {
  setup
  need_cuda
  in_env python -m pytest --noconftest -p no:cacheprovider -q -rs \
    tests/unit/test_inference.py tests/unit/test_model_outputs.py -k "cuda" "$@"
}

case "${1:-}" in
  prepare | prepare-check) shift; prepare "$@" ;;
  run) shift; run "$@" ;;
  check) shift; check "$@" ;;
  check-models) shift; check_models "$@" ;;
  exec) shift; setup; in_env "$@" ;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
