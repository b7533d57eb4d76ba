#!/usr/bin/env bash
# Every check that needs a CUDA GPU, as one script for a GPU machine (docs/development.md): the
# GPU tests, the throughput benchmark of every method, and the demo pipeline on the GPU with all
# nine methods. Run from the repository root with the project installed (pip install -e '.[test]'):
#   OUT=gpu-check bash benchmarks/gpu_check.sh
# Writes $OUT/pytest-gpu.log, $OUT/bench.json and $OUT/demo.log; prints one summary line per step.
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"

pytest -m gpu -q -p no:cacheprovider > "$out/pytest-gpu.log" 2>&1
echo "pytest -m gpu: exit $? ($(tail -n 1 "$out/pytest-gpu.log"))"

imbssl bench --methods simsiam simclr msn swav vicreg byol dino --out "$out/bench.json" > "$out/bench.log" 2>&1
echo "imbssl bench: exit $? ($out/bench.json)"

demo=$(mktemp -d)
start=$(date +%s)
snakemake --cores all -d "$demo" --configfile config/demo.yaml > "$out/demo.log" 2>&1
status=$?
echo "demo on the GPU: exit $status in $(( $(date +%s) - start )) s"
cp -r "$demo/results/tables" "$out/demo-tables" 2>/dev/null
grep -h "collapsed" "$demo"/results/logs/pretrain/*/*/seed0.log > "$out/demo-collapse.txt" 2>/dev/null
