"""A library states the range it supports; the project's venv keeps exact pins (issue 15)."""
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def test_dependencies_are_ranges_and_the_makefile_pins_a_version_inside_them():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {Requirement(d).name: Requirement(d).specifier for d in deps}
    assert not [d for d in deps if "==" in d], "pins make resattn uninstallable beside other packages"
    for name in ("torch", "torchvision"):
        ops = {s.operator for s in reqs[name]}
        assert ops == {">=", "<"}, f"{name}: a lower and an upper bound, got {reqs[name]}"
    makefile = (ROOT / "Makefile").read_text()
    pins = dict(re.findall(r"\b(torch|torchvision)==([0-9][0-9.]*)\b",
                           re.search(r"^TORCH_PIN \?= (.*)$", makefile, re.M).group(1)))
    oldest = dict(re.findall(r"\b(torch|torchvision)==([0-9][0-9.]*)",
                             re.search(r"^TORCH_OLDEST \?= (.*)$", makefile, re.M).group(1)))
    for name in ("torch", "torchvision"):
        assert pins[name] in reqs[name], f"Makefile pins {name}=={pins[name]} outside {reqs[name]}"
        low = next(s.version for s in reqs[name] if s.operator == ">=")
        assert oldest[name].rstrip(".") == low, "test-oldest installs the lower bound"


def test_the_wheel_holds_every_subpackage(tmp_path):
    """A non-editable install gets the whole layout (layers, models, tools, workflow, utils)."""
    import subprocess
    import sys
    import zipfile
    pytest.importorskip("setuptools")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                          "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("resattn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.rsplit("/", 1)[0] for n in names if n.startswith("resattn/") and n.endswith(".py")}
    assert packages == {"resattn", "resattn/layers", "resattn/models", "resattn/tools",
                        "resattn/utils", "resattn/workflow"}
    assert "resattn/_aliases.py" in names and "resattn/workflow/study.py" in names
