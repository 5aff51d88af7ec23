#!/usr/bin/env bash
# Device check: CUDA tests, then the training and metric benchmarks, each result a JSON line.
# Usage: bash benchmarks/gpu_check.sh [OUTDIR] [all|tests|creps|stylegan|metrics]
# Each part fits one 10-minute call; "all" (the default) needs about 15 minutes on an H200.
set -u
out=${1:-.}
part=${2:-all}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
bench() { timeout 150 python3 benchmarks/bench_train.py "$@" 2>&1 | tail -1 | tee -a "$out/bench.jsonl"; }
want() { [ "$part" = all ] || [ "$part" = "$1" ]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
if want tests; then
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_parity.py 2>&1 | tail -5
fi
if want creps; then
    bench --cfg=creps --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4
    bench --cfg=creps --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4 --recompute=0
    bench --cfg=creps --res=256 --batch=32 --iters=16 --warmup=4
    bench --cfg=creps --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4 --fp32=1
fi
if want stylegan; then
    bench --cfg=stylegan2 --res=256 --batch=32 --batch-gpu=16 --cbase=16384 --iters=16 --warmup=4
    bench --cfg=stylegan3-t --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4
    bench --cfg=stylegan3-t --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4 --fused-modconv=1
fi
if want metrics; then
    timeout 120 python3 benchmarks/bench_metrics.py --batch=64 --iters=8 2>&1 | tail -1 | tee -a "$out/bench.jsonl"
fi
