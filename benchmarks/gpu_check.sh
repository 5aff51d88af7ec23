#!/usr/bin/env bash
# Device check: CUDA tests, then the training benchmarks, each result as a JSON line.
# Usage: bash benchmarks/gpu_check.sh [OUTDIR]
set -u
out=${1:-.}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_parity.py 2>&1 | tail -5
bench() { timeout 150 python3 benchmarks/bench_train.py "$@" 2>&1 | tail -1 | tee -a "$out/bench.jsonl"; }
bench --cfg=creps --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4
bench --cfg=creps --res=256 --batch=32 --iters=16 --warmup=4
bench --cfg=creps --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4 --fp32=1
bench --cfg=creps --res=32 --batch=8 --cbase=4096 --cmax=128 --map-depth=2 --iters=32 --warmup=4
