"""Training augmentation: random crop and flip on the batch in one gather, equal to the per-image
loop it replaced (same generator draws, so runs paired by seed see the same images)."""
import pytest
import torch
import torch.nn.functional as F

from resattn.workflow.train import TrainConfig, _augment, train


def _per_image_loop(x, gen, pad):
    """The former ``_augment``: one slice per image in Python."""
    n, _, h, w = x.shape
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return torch.where(flips.view(n, 1, 1, 1), out.flip(3), out)


@pytest.mark.parametrize("shape,pad", [((128, 1, 28, 28), 3), ((7, 3, 32, 32), 4),
                                       ((5, 2, 9, 6), 1), ((1, 1, 8, 8), 1)])
def test_batched_augment_equals_the_per_image_loop(shape, pad):
    x = torch.randn(shape)
    for seed in range(3):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a, b = _per_image_loop(x, g1, pad), _augment(x, g2, pad)
        assert torch.equal(a, b)
        assert torch.equal(g1.get_state(), g2.get_state())  # the same draws consumed


def test_augment_keeps_dtype_and_takes_channels_last():
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(_augment(x, g1, 2), _per_image_loop(x.contiguous(), g2, 2))
    assert _augment(x.bfloat16(), torch.Generator(), 2).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_in_memory_data_lives_on_the_cuda_device(tmp_path):
    from resattn.workflow.data import load_dataset
    import resattn.workflow.train as t
    bundle = load_dataset("digits", train_subset=128, test_subset=64)
    seen = []
    step = t._step
    t._step = lambda run, x, y: seen.append((x.device.type, y.device.type)) or step(run, x, y)
    try:
        cfg = TrainConfig(dataset="digits", epochs=1, batch_size=32, device="cuda", monitor=False)
        assert train(cfg, tmp_path, bundle=bundle, progress=False).status == "finished"
    finally:
        t._step = step
    assert seen and all(d == ("cuda", "cuda") for d in seen)
    x = torch.randn(16, 1, 8, 8, device="cuda")
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(_augment(x, g1, 1).cpu(), _per_image_loop(x.cpu(), g2, 1))
