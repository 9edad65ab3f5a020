#!/usr/bin/env bash
# Every study at one budget on a CUDA machine, WORKERS runs at a time as one grid (runs shared by
# several studies train once), then the results packed for the trip back.
#
#   studies/run-gpu.sh [BUDGET] [WORKERS] [SECONDS]        defaults: cpu 12 520
#
# Needs python3 with torch, timm, scipy, pyyaml, matplotlib, tqdm, and Fashion-MNIST's four .gz
# files in $DATA (default .data/fashion-mnist). After SECONDS the grid stops (SIGINT, then KILL
# 10 s later); calling the script again on the same machine goes on: finished runs come from
# $ROOT/cache, interrupted ones resume from their last epoch checkpoint. Whether or not the grid
# finished, $ROOT without checkpoints is packed into $OUT/studies-BUDGET.tgz.part-aa, -ab, ...
# (15 MB pieces; join with `cat studies-cpu.tgz.part-* | tar xzf -`). Where the grid did not
# finish, `resattn study studies/*.yaml --budget cpu --out runs/studies --report-only` writes the
# reports from the runs that came back (cells with a missing run are `incomplete`).
set -u
BUDGET=${1:-cpu}; WORKERS=${2:-12}; LIMIT=${3:-520}
DATA=${DATA:-.data/fashion-mnist}; ROOT=${ROOT:-runs/studies}; OUT=${OUT:-.}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
timeout -k 10 --signal=INT "$LIMIT" python3 -m resattn study studies/*.yaml --budget "$BUDGET" \
  --out "$ROOT" --device cuda --data-dir "$DATA" --executor processes --workers "$WORKERS" \
  --cpus-per-run 1 --no-progress > "$OUT/studies-$BUDGET.log" 2>&1
echo "resattn study exit status: $? (124: stopped at the time limit; run again to go on)"
tail -n 40 "$OUT/studies-$BUDGET.log"
echo "runs finished in the cache: $(ls "$ROOT"/cache/*/result.json 2>/dev/null | wc -l)"
tar czf - --exclude='*.pt' --exclude='_grids' "$ROOT" | split -b 15M - "$OUT/studies-$BUDGET.tgz.part-"
ls -la "$OUT"
