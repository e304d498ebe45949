#!/usr/bin/env bash
# The GPU checks and measurements (docs/PERFORMANCE.md, "GPU") in one run on a CUDA machine.
#
#   bash benchmarks/gpu.sh prepare    # here, beside ../shared: copies the benchmark photo and the NIQE
#                                     # parameters into .device/ (git-ignored), for machines without ../shared
#   bash benchmarks/gpu.sh [tests|bench]   # on the GPU machine, from the repository root (with .device/
#                                     # carried): the CUDA tests, then benchmarks/speed.py (or only one of them);
#                                     # logs and JSON under $OUT
#
# Runs from the checkout (PYTHONPATH=src) with the machine's own python3 and PyTorch; nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "prepare" ]]; then
    shared=${SCL_LLE_SHARED:-../shared}
    mkdir -p .device
    install -m 644 "$shared/data/eval_noref_DICM/images/01.jpg" "$shared/metrics/niqe_pris_params.npz" .device/
    ls -l .device
    exit 0
fi

out=${OUT:-runs/gpu}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
[[ -f .device/niqe_pris_params.npz ]] && export SCL_LLE_NIQE_PARAMS=.device/niqe_pris_params.npz
image=()
[[ -f .device/01.jpg ]] && image=(--image .device/01.jpg)
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
"$python" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__,
    "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' | tee -a "$out/gpu.txt"

part=${1:-all}
if [[ "$part" == all || "$part" == tests ]]; then
    "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_metrics.py::test_metrics_on_cuda 2>&1 \
        | tee "$out/tests.log" | tail -15
fi
[[ "$part" == all || "$part" == bench ]] || exit 0

modes=torch,torch:compile,torch+finish,torch:compile+finish,fast,torch:compile@8
"$python" benchmarks/speed.py --device cuda --half --channels-last --sizes 1080p,4k --repeats 20 \
    --modes "$modes" "${image[@]}" --json "$out/speed_fp16.json" 2>&1 | tee "$out/speed_fp16.log" | tail -22
"$python" benchmarks/speed.py --device cuda --half --channels-last --cudnn-benchmark --sizes 4k --repeats 20 \
    --modes torch,torch:compile,fast,torch:compile@8 "${image[@]}" --json "$out/speed_fp16_cudnn.json" 2>&1 \
    | tee "$out/speed_fp16_cudnn.log" | tail -10
