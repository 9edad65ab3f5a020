"""timm 1.0.31's own tests/test_models.py (vendored in tests/timm_suite, unmodified) on resattn's
timm names. Each run is a separate pytest process rooted in tests/timm_suite, whose conftest only
does ``import resattn``. Default run: the selection over every name, and timm's tests on one small
name; ``make test-slow``: every test on every name, and the 15 interface tests on each."""
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm

import resattn

SUITE = Path(__file__).parent / "timm_suite"
SHA256 = "ffb62c6df02601a96c2fda403723a7f96a806897ee061d1009c1f3135fb64eb7"  # timm 1.0.31's file
#: timm's tests that take their models from the registry (list_models): resattn names reach them.
SELECTING = {"test_model_forward", "test_model_backward", "test_model_default_cfgs",
             "test_model_forward_torchscript", "test_model_forward_features",
             "test_model_forward_fx", "test_model_backward_fx", "test_model_forward_fx_torchscript"}
NAMES = timm.list_models("resattn_*")


def _pytest(*args: str, timeout: float) -> subprocess.CompletedProcess:
    src = str(Path(resattn.__file__).resolve().parents[1])  # the resattn these tests import
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=SUITE, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _counts(out: str) -> dict:
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|deselected)", out)}


def test_vendored_file_is_timms_unmodified():
    assert hashlib.sha256((SUITE / "test_models.py").read_bytes()).hexdigest() == SHA256
    assert "Apache License" in (SUITE / "LICENSE").read_text()
    assert SHA256 in (SUITE / "NOTICE").read_text()
    assert (SUITE / "conftest.py").read_text().split("#")[0].strip() == "import resattn"


def test_timm_selects_every_resattn_name():
    run = _pytest("test_models.py", "--collect-only", "-k", "resattn", timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    ids = re.findall(r"test_models\.py::(\w+)\[(?:\d+-)?(resattn_\w+)\]", run.stdout)
    assert len(ids) == len(SELECTING) * len(NAMES) == 8 * 19
    for name in NAMES:
        assert {t for t, n in ids if n == name} == SELECTING, name


def test_timm_suite_on_one_small_name():
    run = _pytest("test_models.py", "-x", "-k", "resattn_cifar_resnet20_dual", timeout=900)
    assert run.returncode == 0, run.stdout[-4000:]
    assert _counts(run.stdout).get("passed") == len(SELECTING) and "failed" not in _counts(run.stdout)


@pytest.mark.slow
def test_timm_suite_and_interface_tests_on_every_name():
    """Heavy: builds ResNet-152 sized models; 437 tests in 12 min 49 s on 2 shared cores."""
    run = _pytest("test_models.py", "test_resattn_interface.py", "-k", "resattn", timeout=7200)
    counts = _counts(run.stdout)
    assert run.returncode == 0, run.stdout[-6000:]
    assert counts.get("passed") == (len(SELECTING) + 15) * len(NAMES) and "failed" not in counts
