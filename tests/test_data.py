"""Tests for resattn.workflow.data on small files written in the real on-disk formats (no downloads)."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from resattn import data
from resattn.workflow.data import DATASETS, DataBundle, DataNotFoundError, default_data_dir, load_dataset

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _norm(raw: np.ndarray, scale: float, mean, std) -> torch.Tensor:
    """Reference normalisation of raw (N, C, H, W) pixels: (x/scale - mean)/std."""
    x = torch.from_numpy(np.asarray(raw, dtype=np.float32)) / scale
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


# --------------------------------------------------------------------------------------
# IDX (Fashion-MNIST) fixtures
# --------------------------------------------------------------------------------------
def _idx_bytes(arr: np.ndarray) -> bytes:
    """Real IDX layout: magic 0x00000803 (uint8, 3 dims) / 0x00000801 (1 dim), big-endian dims."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">I", 0x00000800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    payload = _idx_bytes(arr)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _fashion_arrays(n_train: int = 30, n_test: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    x_te = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    x_tr[0, 0, 0], x_tr[0, 27, 27], x_te[-1, 13, 7] = 0, 255, 128  # known pixels
    y_tr = np.arange(n_train, dtype=np.uint8) % 10
    y_te = (np.arange(n_test, dtype=np.uint8) * 3) % 10
    return x_tr, y_tr, x_te, y_te


def _write_fashion(directory: Path, arrays=None, gz=(True, True, True, True)):
    directory.mkdir(parents=True, exist_ok=True)
    arrays = arrays if arrays is not None else _fashion_arrays()
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for stem, arr, z in zip(stems, arrays, gz):
        _write_idx(directory / stem, arr, z)
    return arrays


def _check_fashion_bundle(b: DataBundle, arrays) -> None:
    x_tr, y_tr, x_te, y_te = arrays
    assert b.name == "fashion-mnist" and b.in_memory
    assert (b.num_classes, b.in_chans, b.image_size) == (10, 1, (28, 28))
    assert b.classes == torchvision.datasets.FashionMNIST.classes and b.classes[9] == "Ankle boot"
    assert b.mean == (FASHION_MEAN,) and b.std == (FASHION_STD,)
    assert isinstance(b.train, TensorDataset) and isinstance(b.test, TensorDataset)
    xt, yt = b.train.tensors
    xe, ye = b.test.tensors
    assert xt.shape == (len(x_tr), 1, 28, 28) and xe.shape == (len(x_te), 1, 28, 28)
    assert xt.dtype == xe.dtype == torch.float32 and yt.dtype == ye.dtype == torch.int64
    assert yt.tolist() == y_tr.tolist() and ye.tolist() == y_te.tolist()
    torch.testing.assert_close(xt, _norm(x_tr[:, None], 255.0, (FASHION_MEAN,), (FASHION_STD,)))
    torch.testing.assert_close(xe, _norm(x_te[:, None], 255.0, (FASHION_MEAN,), (FASHION_STD,)))
    assert xt[0, 0, 0, 0].item() == pytest.approx((0 - FASHION_MEAN) / FASHION_STD, abs=1e-6)
    assert xt[0, 0, 27, 27].item() == pytest.approx((1 - FASHION_MEAN) / FASHION_STD, abs=1e-6)
    assert xe[-1, 0, 13, 7].item() == pytest.approx((128 / 255 - FASHION_MEAN) / FASHION_STD, abs=1e-6)


@pytest.mark.parametrize(
    "gz", [(True,) * 4, (False,) * 4, (True, False, False, True)], ids=["gz", "raw", "mixed"]
)
def test_fashion_mnist_idx_files(tmp_path: Path, gz) -> None:
    arrays = _write_fashion(tmp_path, gz=gz)
    _check_fashion_bundle(load_dataset("fashion-mnist", tmp_path), arrays)


def test_fashion_mnist_torchvision_layout_and_str_path(tmp_path: Path) -> None:
    arrays = _write_fashion(tmp_path / "FashionMNIST" / "raw", gz=(False, True, False, True))
    _check_fashion_bundle(load_dataset("fashion-mnist", str(tmp_path)), arrays)


def test_fashion_mnist_default_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_data_dir("fashion-mnist")[0] == Path("/usr/share/datasets/fashion-mnist")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / ".cache" / "resattn" / "fashion-mnist"
    assert default_data_dir("fashion-mnist") == [tmp_path / "debian", cache]
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion-mnist")
    for d in (tmp_path / "debian", cache, cache / "FashionMNIST" / "raw"):
        assert str(d) in str(err.value) and d in err.value.searched
    arrays = _write_fashion(cache / "FashionMNIST" / "raw")  # torchvision layout inside the cache
    _check_fashion_bundle(load_dataset("fashion-mnist"), arrays)
    arrays2 = _write_fashion(tmp_path / "debian", arrays=_fashion_arrays(seed=1))  # Debian dir wins
    _check_fashion_bundle(load_dataset("fashion-mnist"), arrays2)


def test_fashion_mnist_missing_message(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "nowhere") in msg and str(tmp_path / "nowhere" / "FashionMNIST" / "raw") in msg
    assert "sudo apt-get install dataset-fashion-mnist" in msg
    assert "--data-dir" in msg and "--download" in msg


def test_fashion_mnist_partial_files_named(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"missing: t10k-labels-idx1-ubyte\[\.gz\]"):
        load_dataset("fashion-mnist", tmp_path)


def test_fashion_mnist_count_mismatch(tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te = _fashion_arrays()
    _write_fashion(tmp_path, arrays=(x_tr, y_tr[:-1], x_te, y_te))
    with pytest.raises(ValueError, match="30 images but 29 labels"):
        load_dataset("fashion-mnist", tmp_path)


def test_fashion_mnist_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class FakeFashionMNIST:  # stands in for the network: writes what torchvision would
        classes = torchvision.datasets.FashionMNIST.classes

        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((Path(root), download))
            _write_fashion(Path(root) / "FashionMNIST" / "raw", gz=(False,) * 4)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    b = load_dataset("fashion-mnist", tmp_path, download=True)
    assert calls == [(tmp_path, True)]
    _check_fashion_bundle(b, _fashion_arrays())
    load_dataset("fashion-mnist", tmp_path, download=True)  # present now: no second download
    assert len(calls) == 1


# --------------------------------------------------------------------------------------
# sklearn digits
# --------------------------------------------------------------------------------------
def test_digits_split_values_and_stats() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    b = load_dataset("digits")
    assert b.in_memory and (b.num_classes, b.in_chans, b.image_size) == (10, 1, (8, 8))
    assert b.classes == [str(i) for i in range(10)]
    xt, yt = b.train.tensors
    xe, ye = b.test.tensors
    assert xt.shape == (1437, 1, 8, 8) and xe.shape == (360, 1, 8, 8)
    assert xt.dtype == torch.float32 and yt.dtype == ye.dtype == torch.int64
    # stratified: each class's test share is within one example of 360/1797 of its size
    full = np.bincount(d.target, minlength=10)
    assert np.all(np.abs(ye.bincount(minlength=10).numpy() - full * 360 / 1797) <= 1)
    assert (yt.bincount(minlength=10) + ye.bincount(minlength=10)).tolist() == full.tolist()
    # the constants are the [0, 1] statistics of all 1797 images
    assert b.mean[0] == pytest.approx((d.data / 16).mean(), abs=5e-5)
    assert b.std[0] == pytest.approx((d.data / 16).std(), abs=5e-5)
    # values are (x/16 - mean)/std of real digits images; the two splits partition the set
    raw = torch.cat([xt, xe]) * b.std[0] + b.mean[0]
    raw16 = raw * 16
    torch.testing.assert_close(raw16, raw16.round(), atol=2e-5, rtol=0)
    got = Counter((tuple(r), int(lbl)) for r, lbl in zip(raw16.round().int().flatten(1).tolist(), torch.cat([yt, ye]).tolist()))
    want = Counter((tuple(r), int(lbl)) for r, lbl in zip(d.data.astype(int).tolist(), d.target.tolist()))
    assert got == want
    torch.testing.assert_close(xt, _norm(raw16.round()[:1437].numpy(), 16.0, b.mean, b.std))
    # the split is fixed: independent of ``seed`` and of the call
    b2 = load_dataset("digits", seed=123)
    assert torch.equal(b2.train.tensors[0], xt) and torch.equal(b2.test.tensors[1], ye)


def test_digits_resize_to_image_size() -> None:
    b = load_dataset("digits", image_size=16, test_subset=20)
    assert b.image_size == (16, 16)
    assert b.train.tensors[0].shape == (1437, 1, 16, 16) and b.test.tensors[0].shape == (20, 1, 16, 16)
    assert b.train.tensors[0].dtype == torch.float32


# --------------------------------------------------------------------------------------
# subsets and argument errors
# --------------------------------------------------------------------------------------
def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.flatten(1)}


def test_subsets_balanced_deterministic_and_seeded() -> None:
    full = load_dataset("digits")
    a = load_dataset("digits", train_subset=50, test_subset=20, seed=7)
    assert a.train.tensors[0].shape == (50, 1, 8, 8) and a.test.tensors[0].shape == (20, 1, 8, 8)
    assert a.train.tensors[1].bincount(minlength=10).tolist() == [5] * 10
    assert a.test.tensors[1].bincount(minlength=10).tolist() == [2] * 10
    assert _rows(a.train.tensors[0]) <= _rows(full.train.tensors[0])  # drawn from the split
    again = load_dataset("digits", train_subset=50, test_subset=20, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.train.tensors + a.test.tensors, again.train.tensors + again.test.tensors))
    other = load_dataset("digits", train_subset=50, test_subset=20, seed=8)
    assert not torch.equal(a.train.tensors[0], other.train.tensors[0])
    assert other.train.tensors[1].bincount(minlength=10).tolist() == [5] * 10
    uneven = load_dataset("digits", train_subset=15).train.tensors[1].bincount(minlength=10)
    assert uneven.sum() == 15 and uneven.min() == 1 and uneven.max() == 2
    whole = load_dataset("digits", train_subset=1437)  # the whole split, in dataset order
    assert torch.equal(whole.train.tensors[0], full.train.tensors[0])


def test_balanced_subset_fills_from_larger_classes() -> None:
    labels = torch.tensor([0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])  # class 0 has a single example
    idx = data._balanced_subset(labels, 9, seed=0, num_classes=3, arg="train_subset")
    assert labels[idx].bincount().tolist() == [1, 4, 4]
    assert idx.tolist() == sorted(set(idx.tolist()))


@pytest.mark.parametrize("arg,value", [("train_subset", 1438), ("train_subset", 9), ("test_subset", 0), ("test_subset", 361)])
def test_subset_out_of_range(arg: str, value: int) -> None:
    hi = 1437 if arg == "train_subset" else 360
    with pytest.raises(ValueError, match=rf"{arg} must be an int in \[10, {hi}\].*got {value}"):
        load_dataset("digits", **{arg: value})


def test_bad_name_and_image_size() -> None:
    with pytest.raises(ValueError) as err:
        load_dataset("mnist")
    assert "'mnist'" in str(err.value) and all(n in str(err.value) for n in DATASETS)
    with pytest.raises(ValueError, match="unknown dataset"):
        default_data_dir("imagenet")
    for bad in (0, -3):
        with pytest.raises(ValueError, match="image_size"):
            load_dataset("digits", image_size=bad)
    assert DATASETS == ("fashion-mnist", "digits", "cifar10", "cifar100", "imagefolder")
    assert default_data_dir("digits") == [] and default_data_dir("imagefolder") == []


# --------------------------------------------------------------------------------------
# CIFAR fixtures (python pickle batches, torchvision's file names)
# --------------------------------------------------------------------------------------
def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _write_cifar10(root: Path, per_batch: int = 10, n_test: int = 20, label_max: int = 9):
    """cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}: data (n, 3072) uint8 R|G|B planes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in (np.arange(per_batch) + i) % 10]
        _pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y, "data": x,
                                             "filenames": [f"img{i}_{j}.png" for j in range(per_batch)]})
        xs.append(x)
        ys += y
    xe = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    ye = [int(v) for v in np.arange(n_test) % 10]
    ye[-1] = label_max
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": ye, "data": xe,
                                    "filenames": [f"t{j}.png" for j in range(n_test)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return np.concatenate(xs).reshape(-1, 3, 32, 32), ys, xe.reshape(-1, 3, 32, 32), ye, names


def _write_cifar100(root: Path, per_class_train: int = 2, per_class_test: int = 1):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = []
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        n = 100 * per
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in (np.arange(n) * 7) % 100]
        _pickle(folder / split, {"data": x, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                                 "filenames": [f"{split}{j}.png" for j in range(n)], "batch_label": split})
        out += [x.reshape(-1, 3, 32, 32), fine]
    fine_names = [f"class_{i:02d}" for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": [f"super_{i}" for i in range(20)]})
    return (*out, fine_names)


def test_torchvision_cifar_rejects_fixture_md5(tmp_path: Path) -> None:
    """Why data.py reads the batches itself (md5 checked, arrays only): torchvision refuses non-official files."""
    _write_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CIFAR10(str(tmp_path), train=True, download=False)


def test_cifar10_batches(tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te, names = _write_cifar10(tmp_path)
    for where in (tmp_path, tmp_path / "cifar-10-batches-py"):  # root or the batch folder itself
        b = load_dataset("cifar10", where)
        assert b.in_memory and (b.num_classes, b.in_chans, b.image_size) == (10, 3, (32, 32))
        assert b.classes == names and b.mean == CIFAR10_MEAN and b.std == CIFAR10_STD
        xt, yt = b.train.tensors
        xe, ye = b.test.tensors
        assert xt.shape == (50, 3, 32, 32) and xe.shape == (20, 3, 32, 32)
        assert xt.dtype == torch.float32 and yt.dtype == torch.int64 and xt.is_contiguous()
        assert yt.tolist() == y_tr and ye.tolist() == y_te
        torch.testing.assert_close(xt, _norm(x_tr, 255.0, CIFAR10_MEAN, CIFAR10_STD))
        torch.testing.assert_close(xe, _norm(x_te, 255.0, CIFAR10_MEAN, CIFAR10_STD))
        # pixel (row 3, col 5) of channel G of training image 12 is byte 1024 + 3*32 + 5 of its row
        raw = x_tr.reshape(50, 3072)[12, 1024 + 3 * 32 + 5]
        assert xt[12, 1, 3, 5].item() == pytest.approx((raw / 255 - CIFAR10_MEAN[1]) / CIFAR10_STD[1], abs=1e-6)
    sub = load_dataset("cifar10", tmp_path, train_subset=20, test_subset=10, seed=3)
    assert sub.train.tensors[1].bincount(minlength=10).tolist() == [2] * 10
    assert sub.test.tensors[1].bincount(minlength=10).tolist() == [1] * 10


def test_cifar10_label_out_of_range(tmp_path: Path) -> None:
    _write_cifar10(tmp_path, label_max=10)
    with pytest.raises(ValueError, match=r"test labels must lie in \[0, 10\)"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_batches(tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te, names = _write_cifar100(tmp_path)
    b = load_dataset("cifar100", tmp_path)
    assert (b.num_classes, b.in_chans, b.image_size) == (100, 3, (32, 32)) and b.classes == names
    assert b.mean == CIFAR100_MEAN and b.std == CIFAR100_STD
    xt, yt = b.train.tensors
    xe, ye = b.test.tensors
    assert xt.shape == (200, 3, 32, 32) and xe.shape == (100, 3, 32, 32)
    assert yt.tolist() == y_tr and ye.tolist() == y_te  # fine labels
    torch.testing.assert_close(xt, _norm(x_tr, 255.0, CIFAR100_MEAN, CIFAR100_STD))
    torch.testing.assert_close(xe, _norm(x_te, 255.0, CIFAR100_MEAN, CIFAR100_STD))
    sub = load_dataset("cifar100", tmp_path, train_subset=100, seed=0)
    assert sub.train.tensors[1].bincount(minlength=100).tolist() == [1] * 100
    with pytest.raises(ValueError, match=r"train_subset must be an int in \[100, 200\]"):
        load_dataset("cifar100", tmp_path, train_subset=99)


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing_message(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(name, tmp_path)
    msg = str(err.value)
    assert str(tmp_path / folder) in msg and "--download" in msg and "--data-dir" in msg
    assert err.value.searched == [tmp_path / folder]


def test_cifar_default_dir_and_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".cache" / "resattn" / "cifar10"
    assert default_data_dir("cifar10") == [cache]
    calls = []

    class FakeCIFAR10(torchvision.datasets.CIFAR10):  # stands in for the network download
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((Path(root), download))
            _write_cifar10(Path(root))

    monkeypatch.setitem(data._CIFAR_CLASSES, "cifar10", FakeCIFAR10)
    with pytest.raises(DataNotFoundError, match=str(cache / "cifar-10-batches-py")):
        load_dataset("cifar10")
    b = load_dataset("cifar10", download=True)
    assert calls == [(cache, True)] and len(b.train) == 50
    load_dataset("cifar10", download=True)  # already there: nothing fetched
    assert len(calls) == 1


# --------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------
COLOURS = {"cat": (200, 30, 10), "dog": (5, 120, 250)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _write_folder(root: Path, splits=(("train", 3), ("val", 2)), classes=("cat", "dog")) -> None:
    for split, n in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), COLOURS.get(c, (0, 0, 0))).save(d / f"{i}.png")
    grey = root / splits[0][0] / classes[0] / "grey.png"  # a greyscale file is converted to RGB
    Image.new("L", (20, 20), 77).save(grey)


def test_imagefolder(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    b = load_dataset("imagefolder", tmp_path, image_size=16)
    assert not b.in_memory and b.name == "imagefolder"
    assert (b.num_classes, b.in_chans, b.image_size, b.classes) == (2, 3, (16, 16), ["cat", "dog"])
    assert b.mean == IMAGENET_MEAN and b.std == IMAGENET_STD
    assert len(b.train) == 7 and len(b.test) == 4
    for ds in (b.train, b.test):
        x, y = ds[0]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 0
    x, y = b.test[3]  # last dog: a solid colour survives resize + centre crop exactly
    want = (torch.tensor(COLOURS["dog"]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert y == 1
    torch.testing.assert_close(x, want.view(3, 1, 1).expand(3, 16, 16), atol=1e-5, rtol=0)
    assert torch.equal(b.test[2][0], b.test[2][0])  # no randomness in the test transform
    grey_idx = [i for i, (p, _) in enumerate(b.train.samples) if p.endswith("grey.png")][0]
    x, _ = b.train[grey_idx]  # random crop of a solid grey image is still solid grey, 3 channels
    want = (77 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x, want.view(3, 1, 1).expand(3, 16, 16), atol=1e-5, rtol=0)
    assert load_dataset("imagefolder", tmp_path).image_size == (224, 224)


def test_imagefolder_test_dir_and_subset(tmp_path: Path) -> None:
    _write_folder(tmp_path, splits=(("train", 3), ("test", 2)))
    b = load_dataset("imagefolder", tmp_path, image_size=8, train_subset=4, test_subset=2, seed=1)
    assert isinstance(b.train, Subset) and len(b.train) == 4 and len(b.test) == 2
    assert sorted(y for _, y in (b.train[i] for i in range(4))) == [0, 0, 1, 1]
    assert sorted(b.test[i][1] for i in range(2)) == [0, 1]
    again = load_dataset("imagefolder", tmp_path, image_size=8, train_subset=4, seed=1)
    assert again.train.indices == b.train.indices


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("imagefolder")
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("imagefolder", tmp_path / "none")
    assert str(tmp_path / "none" / "train") in str(err.value) and str(tmp_path / "none" / "val") in str(err.value)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(DataNotFoundError, match="unusable"):
        load_dataset("imagefolder", tmp_path / "empty")
    _write_folder(tmp_path / "a", splits=(("train", 1),))
    _write_folder(tmp_path / "a", splits=(("val", 1),), classes=("cat", "cow"))
    with pytest.raises(ValueError, match="class folders differ"):
        load_dataset("imagefolder", tmp_path / "a")
    _write_folder(tmp_path / "b")
    with pytest.raises(ValueError, match="cannot be downloaded"):
        load_dataset("imagefolder", tmp_path / "b", download=True)


# --------------------------------------------------------------------------------------
# the real Debian Fashion-MNIST, when installed
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(not (REAL_FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    b = load_dataset("fashion-mnist", REAL_FASHION)
    xt, yt = b.train.tensors
    xe, ye = b.test.tensors
    assert xt.shape == (60000, 1, 28, 28) and xe.shape == (10000, 1, 28, 28)
    assert yt.bincount().tolist() == [6000] * 10 and ye.bincount().tolist() == [1000] * 10
    assert abs(xt.mean().item()) < 1e-3 and abs(xt.std().item() - 1) < 1e-3  # the constants fit


def test_cifar_batches_are_checked_before_unpickling(tmp_path: Path) -> None:
    """Issue 15: md5 checks were switched off and the batches unpickled as they came."""
    _write_cifar10(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", {"labels": [0], "data": Payload()})
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR batch: .*(builtins|io)\.open"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()  # refused before anything ran
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    _write_cifar10(tmp_path / "b")
    with pytest.warns(UserWarning, match="md5 differs from the official CIFAR release"):
        load_dataset("cifar10", tmp_path / "b")
