#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one run.
#
#   bash benchmarks/gpu_figures.sh                  # writes benchmarks/results/gpu/
#   OUT=/some/dir BATCH=128 bash benchmarks/gpu_figures.sh
#   STEPS="2 3" bash benchmarks/gpu_figures.sh       # only some steps (0 1 1b 2 3; default all),
#                                                   # to split the work over calls with a time limit
#
# Needs only torch, torchvision and timm (the package runs from this checkout through
# PYTHONPATH; nothing is installed). Every step writes its own files, so a run that is cut
# short still leaves what it measured. The steps:
#   0. the CUDA tests of the fast paths;
#   1. bfloat16, batch 256: LIT-Ti beside PVTv2-b2 and LIT-S beside Swin-T, images/s and the
#      allocator's training peak (1b: the same with the grid_sample DTM path);
#   2. DTM forward+backward against torchvision.ops.deform_conv2d's CUDA kernel, with litvit's
#      grid_sample path and with its Triton kernel (the CUDA default), at batch $BATCH; then at
#      batch 64 by wall clock and by CUDA kernel time (launch overhead left out);
#   3. LIT-S inference memory at 800 x 1344 against one block's attention matrix.
# PYTHON picks the interpreter (default: python), MODELS the models of step 1. DEVICE=cpu runs
# the same steps on the CPU with small batches and one repeat (a smoke test of this script;
# SMOKE_BATCH, SMOKE_IMG and SMOKE_SIZE shrink it further).
set -uo pipefail  # no -e: a step that fails (say, out of memory) must not stop the others
status=0
cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-256}
OUT=${OUT:-benchmarks/results/gpu}
MODELS=${MODELS:-lit_ti pvt_v2_b2 lit_s swin_tiny_patch4_window7_224}
DTM_EXTRA=()
MEM_EXTRA=()
if [[ $DEVICE == cpu ]]; then
    BATCH=${SMOKE_BATCH:-2}
    IMG=${SMOKE_IMG:-224}
    # A small matmul probe: CPUs without native bfloat16 arithmetic (AVX2 only) multiply
    # bfloat16 matrices about 100x slower than float32 ones.
    EXTRA=(--warmup 1 --repeats 1 --steps 1 --no-memory --img-size "$IMG" --matmul-size 256)
    DTM_EXTRA=(--repeats 1 --img-size "$IMG")
    MEM_EXTRA=(--repeats 1)
    DTM_BATCH=2
    SIZE=${SMOKE_SIZE:-256x384}
else
    # several steps per timed repeat so that one repeat is long against launch and sync jitter
    EXTRA=(--warmup 3 --repeats 5 --steps 5)
    DTM_BATCH=$BATCH  # the batch of the model comparisons (step 1)
    SIZE=800x1344
fi
STEPS=" ${STEPS:-0 1 1b 2 3} "
want() { [[ $STEPS == *" $1 "* ]]; }
mkdir -p "$OUT" || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    date -u +"%Y-%m-%d %H:%M UTC"
    git rev-parse --short HEAD 2>/dev/null || true
    "$PYTHON" -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
    if [[ $DEVICE == cuda* ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
} | tee "$OUT/machine.txt"

if want 0 && [[ $DEVICE != cpu ]] && "$PYTHON" -c "import pytest" 2>/dev/null; then
    echo "== 0. the CUDA tests of the fast paths (Triton DTM kernel, attention, DTM)"
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_dtm_triton.py tests/test_dtm.py tests/test_fast_paths.py \
        2>&1 | tail -n 30 | tee "$OUT/cuda_tests.txt" || status=1
fi

if want 1; then
    echo "== 1. bfloat16, batch $BATCH: throughput, allocator peak, matmul peak"
    "$PYTHON" -m litvit benchmark --device "$DEVICE" --precision bfloat16 -b "$BATCH" --train-batch-size "$BATCH" \
        --model $MODELS --matmul-peak ${EXTRA[@]+"${EXTRA[@]}"} \
        --json "$OUT/bf16_b$BATCH.json" --csv "$OUT/bf16_b$BATCH.csv" | tee "$OUT/bf16_b$BATCH.txt" || status=1
fi

if want 1b && [[ $DEVICE != cpu ]]; then
    echo "== 1b. the same for LIT-Ti and LIT-S with the grid_sample DTM path (LITVIT_DTM_KERNEL=torch)"
    LITVIT_DTM_KERNEL=torch "$PYTHON" -m litvit benchmark --device "$DEVICE" --precision bfloat16 -b "$BATCH" \
        --train-batch-size "$BATCH" --model lit_ti lit_s ${EXTRA[@]+"${EXTRA[@]}"} \
        --json "$OUT/bf16_b${BATCH}_torch_dtm.json" | tee "$OUT/bf16_b${BATCH}_torch_dtm.txt" || status=1
fi

if want 2; then
    echo "== 2. DTM against torchvision.ops.deform_conv2d, batch $DTM_BATCH"
    "$PYTHON" benchmarks/dtm.py --device "${DEVICE%%:*}" --batch-size "$DTM_BATCH" ${DTM_EXTRA[@]+"${DTM_EXTRA[@]}"} \
        | tee "$OUT/dtm.txt" || status=1
    if [[ $DEVICE != cpu ]]; then
        echo "== 2b. the same at batch 64: wall clock, and CUDA kernel time alone (no launch overhead)"
        "$PYTHON" benchmarks/dtm.py --device cuda --batch-size 64 --kernels triton | tee "$OUT/dtm_b64.txt" || status=1
        "$PYTHON" benchmarks/dtm.py --device cuda --batch-size 64 --kernels triton --timer kernels --steps 10 \
            | tee "$OUT/dtm_b64_kernels.txt" || status=1
    fi
fi

if want 3; then
    echo "== 3. LIT-S inference memory at $SIZE against the attention matrix"
    for precision in float32 bfloat16; do
        "$PYTHON" benchmarks/attention_memory.py --device "$DEVICE" --img-size "$SIZE" --precision "$precision" \
            ${MEM_EXTRA[@]+"${MEM_EXTRA[@]}"} --json "$OUT/attention_memory_$precision.json" | tee "$OUT/attention_memory_$precision.txt" || status=1
    done
fi
exit $status
