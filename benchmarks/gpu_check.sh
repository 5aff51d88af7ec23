#!/usr/bin/env bash
# Device check: CUDA tests, then the training and metric benchmarks, each result a JSON line.
# Usage: bash benchmarks/gpu_check.sh [OUTDIR] [all|tests|creps|stylegan|metrics|sbs|sbs-stylegan3]
# Each part fits one 10-minute call; "all" (tests, creps, stylegan, metrics) needs about 15 minutes
# on an H200.
#
# sbs: the CUDA tests, then ours beside the published trainer on the same GPU (creps 256x256,
# batch 32, batch-gpu 16, 150 s each) through the side-by-side script. It needs a checkout of
# VinAIResearch/CREPS at .ref/creps and the side-by-side script at .ref/side_by_side_gpu.sh (an
# ignored folder: nothing of it enters the project). sbs-stylegan3 does the same for stylegan3-t.
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
sbs() {  # CASE: the published trainer and ours, one after the other (tables in $out/sbs)
    if [ ! -d .ref/creps ] || [ ! -f "${SBS_SCRIPT:-.ref/side_by_side_gpu.sh}" ]; then
        echo "sbs: needs the published checkout at .ref/creps and the script at .ref/side_by_side_gpu.sh"; return 2
    fi
    bash "${SBS_SCRIPT:-.ref/side_by_side_gpu.sh}" .ref/creps "$out/sbs" "$1"
}
if [ "$part" = sbs ] || [ "$part" = sbs-stylegan3 ]; then
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_compile.py 2>&1 | tail -3
fi
[ "$part" = sbs ] && sbs creps:256:16:150
[ "$part" = sbs-stylegan3 ] && sbs stylegan3-t:256:16:150
if want metrics; then
    timeout 120 python3 benchmarks/bench_metrics.py --batch=64 --iters=8 2>&1 | tail -1 | tee -a "$out/bench.jsonl"
fi
