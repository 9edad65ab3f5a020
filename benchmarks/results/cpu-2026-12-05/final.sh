set -x
cd /work/main
.venv/bin/resattn bench --variants none,branch:se,pre:se,dual:eca/cbam,dual:eca/eca,dual:se/se --dtype fp32,bf16 --no-reference --rounds 15 --steps 3 --no-progress --out /tmp/bf_eager
.venv/bin/resattn bench --variants none,branch:se,dual:eca/cbam,dual:eca/eca --dtype bf16 --compile --no-reference --rounds 15 --steps 3 --no-progress --out /tmp/bf_comp
