set -x
cd /work/main
V=none,branch:se,dual:eca/cbam,dual:eca/eca
PYTHONPATH=/work/wt/before/src .venv/bin/python -m resattn bench --variants $V --dtype bf16 --no-reference --rounds 7 --steps 3 --no-progress --out /tmp/bq_before
.venv/bin/resattn bench --variants $V --dtype bf16 --no-reference --rounds 7 --steps 3 --no-progress --out /tmp/bq_after
.venv/bin/resattn bench --dtype fp32,bf16 --rounds 5 --steps 3 --no-progress --out /tmp/bq_full
.venv/bin/resattn bench --variants $V --dtype bf16 --compile --no-reference --rounds 7 --steps 3 --no-progress --out /tmp/bq_comp
