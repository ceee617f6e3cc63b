#!/usr/bin/env bash
# Scratch (session 9): detection and segmentation training on CUDA with fp16 (GradScaler), resume,
# eval; classification fp16 too. DEVICE=cpu for a dry run. Writes logs under $1.
set -uo pipefail
LOG=${1:-/tmp/smoke}; mkdir -p "$LOG"
DEVICE=${DEVICE:-cuda}; AMP=${AMP:-fp16}; SIZE=${SIZE:-256}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
D=/tmp/smoke_data; R=/tmp/smoke_runs; rm -rf $R
run() { local name=$1; shift; echo "== $name: $*"; local t0=$SECONDS; "$@" > "$LOG/$name.log" 2>&1; local rc=$?; echo "rc=$rc $((SECONDS - t0)) s"; tail -n 4 "$LOG/$name.log"; }
python3 -m pip install -q --no-index --find-links scratch_gpu/wheels pycocotools > "$LOG/pip.txt" 2>&1; tail -2 "$LOG/pip.txt"
run synth_det $PY -m litvit data synth --task detect --out $D/det --num-train 64 --num-val 16
run synth_seg $PY -m litvit data synth --task segment --out $D/seg --num-train 64 --num-val 16
run synth_cls $PY -m litvit data synth --task classify --out $D/cls --num-train 20 --num-val 5
for arch in retinanet mask_rcnn; do
  run det_$arch $PY -m litvit detect train --data-root $D/det --arch $arch --model lit_ti --min-size $SIZE --max-size $SIZE \
      --epochs 2 --batch-size 8 --lr 1e-4 --device $DEVICE --amp $AMP --workers 2 --eval-every 2 --log-every 4 --output $R/$arch
  [[ $arch == retinanet ]] && run det_${arch}_resume $PY -m litvit detect train --data-root $D/det --arch $arch --model lit_ti --min-size $SIZE --max-size $SIZE \
      --epochs 3 --batch-size 8 --lr 1e-4 --device $DEVICE --amp $AMP --workers 2 --eval-every 3 --log-every 4 --output $R/$arch --resume auto
  run det_${arch}_eval $PY -m litvit detect eval --checkpoint $R/$arch/best.pth --data-root $D/det --split val --device $DEVICE
done
run seg_train $PY -m litvit segment train --data-dir $D/seg --model lit_ti --scale 128 128 --iterations 40 --batch-size 8 \
    --crop-size 128 128 --test-scale 128 128 --device $DEVICE --amp $AMP --workers 2 --eval-interval 40 --checkpoint-interval 20 \
    --log-interval 10 --output-dir $R/seg
run seg_resume $PY -m litvit segment train --data-dir $D/seg --model lit_ti --scale 128 128 --iterations 60 --batch-size 8 \
    --crop-size 128 128 --test-scale 128 128 --device $DEVICE --amp $AMP --workers 2 --eval-interval 60 --checkpoint-interval 20 \
    --log-interval 10 --output-dir $R/seg --resume auto
: run cls_train $PY -m litvit train --data-dir $D/cls --model lit_ti --img-size 64 --epochs 2 --batch-size 32 --device $DEVICE \
    --amp $AMP --workers 2 --output $R/cls
ls -la $R/* > "$LOG/runs_ls.txt" 2>&1
