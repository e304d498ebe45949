#!/usr/bin/env bash
# Ablations of the CPU training recipe (docs/MODEL_CARD.md): trains the full objective (configs/scl_lle_cpu.yaml)
# and every configs/ablations/*.yaml with the same seed, data and learning-rate schedule, stopping each at step
# STOP (stop_after: the first STOP steps of the full schedule), then evaluates all of them side by side with one
# `scl-lle evaluate` run. Runs that already finished are not trained again.
#
#   SCL_LLE_SHARED=../shared bash scripts/ablations.sh [STOP] [OUTPUT]     (defaults: 200 runs/ablations)
set -euo pipefail
cd "$(dirname "$0")/.."
stop="${1:-200}"
out="${2:-runs/ablations}"
: "${SCL_LLE_SHARED:?export SCL_LLE_SHARED=/path/to/shared}"

methods=()
for config in configs/scl_lle_cpu.yaml configs/ablations/*.yaml; do
    label="$(basename "$config" .yaml)"
    [ "$label" = scl_lle_cpu ] && label=full
    if [ ! -f "$out/$label/model.safetensors" ]; then
        echo "== training $label ($config, stop after step $stop)"
        scl-lle train --config "$config" name="$label" output_root="$out" stop_after="$stop" -q
    fi
    methods+=("$label=$out/$label/model.safetensors")
done
methods_csv="$(IFS=,; echo "${methods[*]}")"
scl-lle evaluate --methods "$methods_csv,scl-lle-release,zero-dce" \
    --datasets lime,dicm,lol15,npe,camvid-dark --output "$out/eval" -q
echo "results: $out/eval/summary.md (full report: $out/eval/report.md)"
