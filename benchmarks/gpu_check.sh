#!/usr/bin/env bash
# Device check: CUDA tests, then the training and metric benchmarks, each result a JSON line.
# Usage: bash benchmarks/gpu_check.sh [OUTDIR]
set -u
out=${1:-.}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_parity.py 2>&1 | tail -5
bench() { timeout 150 python3 benchmarks/bench_train.py "$@" 2>&1 | tail -1 | tee -a "$out/bench.jsonl"; }
bench --cfg=creps --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4
bench --cfg=creps --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4 --recompute=0
bench --cfg=creps --res=256 --batch=32 --iters=16 --warmup=4
bench --cfg=creps --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4 --fp32=1
bench --cfg=stylegan2 --res=256 --batch=32 --batch-gpu=16 --cbase=16384 --iters=16 --warmup=4
bench --cfg=stylegan3-t --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4
bench --cfg=stylegan3-t --res=256 --batch=32 --batch-gpu=16 --iters=16 --warmup=4 --fused-modconv=1
timeout 120 python3 benchmarks/bench_metrics.py --batch=64 --iters=8 2>&1 | tail -1 | tee -a "$out/bench.jsonl"
