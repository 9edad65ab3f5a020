import pytest
import torch

# timm's own test suite (vendored, unmodified) runs in its own pytest process with its own rootdir
# and conftest: see tests/test_timm_suite.py.
collect_ignore = ["timm_suite"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
