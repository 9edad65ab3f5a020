#!/usr/bin/env bash
# CUDA smoke check of the precision/device/data paths (a few minutes on one GPU):
#   bash benchmarks/gpu_smoke.sh OUTDIR
# the CUDA test of in-memory data on the device, fused vs reference under bf16 autocast on CUDA,
# and a one-round `resattn bench --device cuda` in fp32 and bf16, eager and compiled.
set -u
OUT=${1:-/tmp/gpu_smoke}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src
PY=${PYTHON:-python}
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/env.txt"
$PY -m pytest tests/test_augment.py tests/test_precision.py -q -p no:cacheprovider -W ignore 2>&1 | tail -5 | tee "$OUT/tests.txt"
$PY - <<'PY' 2>&1 | tee "$OUT/fused_bf16_cuda.txt"
import copy, torch
from resattn import create_model
from resattn.layers.modulation import fused
for pattern, kw in (("dual", {}), ("branch", {"attn": "se"}), ("dual", {"res_attn": "cbam", "skip_attn": "se"})):
    m = create_model("cifar_resnet20", pattern=pattern, res_gamma_init=0.5, skip_gamma_init=0.2, **kw).cuda().eval()
    x = torch.randn(64, 3, 32, 32, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        yf = m(x)
        with fused(m, False):
            yr = m(x)
    y64 = copy.deepcopy(m).double()(x.double())
    s = y64.abs().max().item()
    print(pattern, kw, "dtype", yf.dtype, yr.dtype, "err fused", (yf.double() - y64).abs().max().item() / s,
          "err ref", (yr.double() - y64).abs().max().item() / s)
PY
$PY -m resattn bench --device cuda --precision fp32,bf16 --compile --variants none,branch:se,dual \
    --batch-size 512 --input 3,32,32 --rounds 2 --steps 2 --no-progress --out "$OUT/bench_c20" 2>&1 | tail -20 | tee "$OUT/bench_c20.txt"
