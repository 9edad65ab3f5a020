#!/usr/bin/env bash
# One call on a lent CUDA machine (about 9 minutes): the GPU rows of `resattn bench` (issue 13) and
# as many study runs at the `cpu` budget as fit (issue 14), then reports and the files to bring back.
#
#   OUT=DIR bash benchmarks/device_run.sh [TOTAL_SECONDS] [WORKERS]      defaults: 520 15
#
# Needs python3 with torch, timm, scipy, pyyaml, matplotlib, tqdm, and Fashion-MNIST's four .gz
# files in .data/fashion-mnist (carried; git-ignored). Studies run in priority order as one grid
# (shared runs trained once, in runs/studies/cache); a run cut off by the time limit resumes from
# its epoch checkpoint when the same command runs again on the same machine. Writes to $OUT:
# device.log, bench.tgz (CSV + PNG per bench), studies.log, studies-cpu.tgz.part-* (no checkpoints).
set -u
OUT=${OUT:-/tmp/device_out}; TOTAL=${1:-520}; WORKERS=${2:-15}
mkdir -p "$OUT" /tmp/bench
T0=$(date +%s)
left() { echo $(( TOTAL - ($(date +%s) - T0) )); }
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
ORDER="studies/04-placement.yaml studies/07-post-vs-dual.yaml studies/08-ceiling.yaml
       studies/02-gamma-init.yaml studies/09-data-regime.yaml studies/03-gamma-order.yaml
       studies/06-gate-weight.yaml studies/10-gamma-drift.yaml studies/01-skip-form.yaml
       studies/05-norm-small-batch.yaml"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)"
  date -u
  echo "== CUDA tests (data on the device, fused vs reference under bf16 autocast)"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_precision.py 2>&1 | tail -4
  echo "== bench cifar_resnet20, batch 512, eager, fp32 and bf16"
  timeout 70 python3 -m resattn bench --device cuda --precision fp32,bf16 --model cifar_resnet20 \
    --batch-size 512 --input 1,28,28 --rounds 5 --steps 5 --no-reference --no-progress --out /tmp/bench/c20 2>&1 | tail -25
  echo "== bench resnet50, batch 64, 3x224x224, eager, fp32 and bf16, with timm's peers"
  timeout 90 python3 -m resattn bench --device cuda --precision fp32,bf16 --model resnet50 \
    --batch-size 64 --input 3,224,224 --rounds 3 --steps 3 --no-reference --no-progress --out /tmp/bench/r50 2>&1 | tail -30
  echo "== bench cifar_resnet20, batch 512, bf16, eager and compiled (plain, dual eca/cbam)"
  timeout 90 python3 -m resattn bench --device cuda --precision bf16 --compile --model cifar_resnet20 \
    --variants none,dual:eca/cbam --batch-size 512 --input 1,28,28 --rounds 3 --steps 5 --no-reference \
    --no-progress --out /tmp/bench/c20_compiled 2>&1 | tail -15
  date -u
} > "$OUT/device.log" 2>&1
tar czf "$OUT/bench.tgz" -C /tmp bench
STUDY_S=$(( $(left) - 50 ))
echo "studies: $STUDY_S s with $WORKERS workers" >> "$OUT/device.log"
OMP_NUM_THREADS=1 timeout -k 10 --signal=INT "$STUDY_S" python3 -m resattn study $ORDER --budget cpu \
  --out runs/studies --device cuda --data-dir .data/fashion-mnist --executor processes \
  --workers "$WORKERS" --cpus-per-run 1 --no-progress > "$OUT/studies.log" 2>&1
echo "resattn study exit status: $? (124: stopped at the time limit)" >> "$OUT/device.log"
echo "runs finished in the cache: $(ls runs/studies/cache/*/result.json 2>/dev/null | wc -l)" >> "$OUT/device.log"
timeout 40 python3 -m resattn study $ORDER --budget cpu --out runs/studies --device cuda \
  --data-dir .data/fashion-mnist --report-only --no-progress >> "$OUT/studies.log" 2>&1
tar czf - --exclude='*.pt' --exclude='_grids' runs/studies | split -b 15M - "$OUT/studies-cpu.tgz.part-"
date -u >> "$OUT/device.log"
cat "$OUT/device.log"; tail -n 30 "$OUT/studies.log"; ls -la "$OUT"
