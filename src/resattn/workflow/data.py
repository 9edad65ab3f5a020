"""Dataset loading for resattn: Fashion-MNIST, sklearn digits, CIFAR-10/100 and image folders.

Everything goes through :func:`load_dataset`, which returns a :class:`DataBundle`.

* ``fashion-mnist``, ``digits``, ``cifar10`` and ``cifar100`` are small enough to live in
  memory: each split is ONE ``float32`` tensor of shape ``(N, C, H, W)``, already scaled
  to [0, 1] and normalised with the dataset's per-channel mean/std, wrapped in a
  :class:`~torch.utils.data.TensorDataset` together with ``int64`` labels of shape ``(N,)``.
  No augmentation is applied here; the trainer augments batches on the tensors.
* ``imagefolder`` streams images from disk through :class:`torchvision.datasets.ImageFolder`
  with torchvision transforms (random resized crop + flip for train, resize + centre crop
  for test); samples are normalised ``float32`` tensors ``(3, S, S)`` and ``int`` labels.

Nothing is downloaded unless ``download=True`` is passed. IDX files are parsed with
torchvision's readers (``torchvision.datasets.mnist.read_image_file`` / ``read_label_file``).
CIFAR pickle batches (torchvision's file names and md5 sums) are checked before they are
unpickled: each file's md5 is compared with the official release, and every file is read by an
unpickler that builds arrays and containers only, so a tampered batch cannot run code.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision.datasets.mnist import read_image_file, read_label_file

__all__ = [
    "DATASETS",
    "flip_labels",
    "DataBundle",
    "DataNotFoundError",
    "default_data_dir",
    "load_dataset",
]

DATASETS: tuple[str, ...] = ("fashion-mnist", "digits", "cifar10", "cifar100", "imagefolder")

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# Per-channel statistics of the [0, 1]-scaled training pixels.
_FASHION_MEAN, _FASHION_STD = (0.2860,), (0.3530,)
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CIFAR100_MEAN, _CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
# Computed over all 1797 sklearn digits images scaled by 1/16 (the tests re-derive them).
_DIGITS_MEAN, _DIGITS_STD = (0.3053,), (0.3760,)
# ImageNet statistics, the usual choice for natural-image folders.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# (train images uint8-range (N, C, H, W), train labels (N,), test images, test labels, class names)
_Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]

_DIGITS_TEST_SIZE = 360  # 1797 images -> 1437 train / 360 test
_DIGITS_SPLIT_SEED = 0  # the split is fixed; ``seed`` only drives subsetting


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not where they were looked for.

    The message lists every place searched and how to get the data. The searched paths are
    also available as the ``searched`` attribute (a list of :class:`~pathlib.Path`).
    """

    def __init__(self, message: str, *, searched: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.searched: list[Path] = [Path(p) for p in searched]


@dataclass
class DataBundle:
    """A loaded dataset: both splits plus what a model needs to know about them.

    Attributes:
        name: one of :data:`DATASETS`.
        train, test: the splits. When ``in_memory`` they are ``TensorDataset(x, y)`` with
            ``x`` float32 ``(N, C, H, W)`` normalised by ``mean``/``std`` and ``y`` int64 ``(N,)``.
        num_classes: number of classes; labels are in ``[0, num_classes)``.
        in_chans: channels C (1 for grey, 3 for RGB).
        image_size: ``(H, W)`` in pixels of the images the splits yield.
        classes: human-readable class names, index = label.
        in_memory: whether the splits are in-memory ``TensorDataset``\\ s.
        mean, std: per-channel statistics used for normalisation, in [0, 1] pixel units.
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    classes: list[str]
    in_memory: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]


# --------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------
def _cache_root() -> Path:
    return Path.home() / ".cache" / "resattn"


def default_data_dir(name: str) -> list[Path]:
    """Directories searched for dataset ``name`` when ``load_dataset`` gets no ``data_dir``.

    * ``fashion-mnist``: ``/usr/share/datasets/fashion-mnist`` (Debian package
      ``dataset-fashion-mnist``), then ``~/.cache/resattn/fashion-mnist``. Each directory is
      also searched in torchvision's layout ``<dir>/FashionMNIST/raw``.
    * ``cifar10`` / ``cifar100``: ``~/.cache/resattn/<name>`` (a torchvision root holding
      ``cifar-10-batches-py/`` or ``cifar-100-python/``).
    * ``digits``: none (bundled with scikit-learn). ``imagefolder``: none (needs ``data_dir``).

    ``download=True`` saves into ``data_dir`` if given, else ``~/.cache/resattn/<name>``.

    Raises:
        ValueError: ``name`` is not in :data:`DATASETS`.
    """
    _check_name(name)
    if name == "fashion-mnist":
        return [DEBIAN_FASHION_MNIST_DIR, _cache_root() / name]
    if name in ("cifar10", "cifar100"):
        return [_cache_root() / name]
    return []


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> DataBundle:
    """Load dataset ``name`` and return both splits as a :class:`DataBundle`.

    Sources:
        * ``fashion-mnist``: Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset
          for Benchmarking Machine Learning Algorithms"; 60000/10000 grey 28x28 images, 10
          classes, read from the IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``
          (``.gz`` or uncompressed) in ``data_dir`` or :func:`default_data_dir`.
        * ``digits``: UCI "Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak 1998)
          as bundled with scikit-learn (``sklearn.datasets.load_digits``): 1797 grey 8x8 images
          with 17 grey levels (0..16), 10 classes; fixed stratified split 1437 train / 360 test.
          Never downloaded.
        * ``cifar10`` / ``cifar100``: Krizhevsky 2009, "Learning Multiple Layers of Features from
          Tiny Images"; 50000/10000 RGB 32x32 images, 10 or 100 (fine) classes, read from the
          python pickle batches (``cifar-10-batches-py/`` / ``cifar-100-python/``) under
          ``data_dir`` (or ``data_dir`` may be that folder itself).
        * ``imagefolder``: ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*`` (or
          ``test/``), any format PIL reads, converted to RGB.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where the files are. ``None`` searches :func:`default_data_dir`.
        download: fetch the data with torchvision if it is not found (fashion-mnist and CIFAR
            only; saved into ``data_dir`` or ``~/.cache/resattn/<name>``). Data already present
            is never re-downloaded.
        train_subset, test_subset: keep only this many examples of the split, chosen by a
            seeded, class-balanced draw (as equal per class as the class sizes allow), kept in
            dataset order. ``None`` keeps the whole split.
        seed: seed of the subset draws; the same seed gives the same subset.
        image_size: side S in pixels. For in-memory sets the images are resized (bilinear,
            antialiased) to S x S when S differs from the native size; for ``imagefolder``
            it is the crop size (default 224).

    Returns:
        A :class:`DataBundle`; see its docstring for shapes and dtypes.

    Raises:
        ValueError: unknown ``name``; ``image_size <= 0``; a subset size outside
            ``[num_classes, len(split)]``; ``download=True`` for ``imagefolder``; malformed
            files (wrong shapes, labels out of range, mismatched class folders).
        DataNotFoundError: the files are not in any searched place (the message lists them
            and says how to get the data).
    """
    _check_name(name)
    scale = 255.0  # raw pixel value of white
    bad_size = isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0
    if image_size is not None and bad_size:
        raise ValueError(f"image_size must be a positive int (pixels) or None, got {image_size!r}")
    root = Path(data_dir).expanduser() if data_dir is not None else None

    if name == "imagefolder":
        return _load_imagefolder(root, download, train_subset, test_subset, seed, image_size)

    if name == "fashion-mnist":
        x_tr, y_tr, x_te, y_te, classes = _read_fashion_mnist(root, download)
        mean, std = _FASHION_MEAN, _FASHION_STD
    elif name == "digits":
        x_tr, y_tr, x_te, y_te, classes = _read_digits()
        mean, std, scale = _DIGITS_MEAN, _DIGITS_STD, 16.0
    else:
        x_tr, y_tr, x_te, y_te, classes = _read_cifar(name, root, download)
        mean, std = (_CIFAR10_MEAN, _CIFAR10_STD) if name == "cifar10" else (_CIFAR100_MEAN, _CIFAR100_STD)

    num_classes = len(classes)
    for split, y in (("train", y_tr), ("test", y_te)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"{name} {split} labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")

    if train_subset is not None:
        idx = _balanced_subset(y_tr, train_subset, seed, num_classes, "train_subset")
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    if test_subset is not None:
        idx = _balanced_subset(y_te, test_subset, seed, num_classes, "test_subset")
        x_te, y_te = x_te[idx], y_te[idx]

    x_tr, x_te = (_to_float(x, scale, mean, std, image_size) for x in (x_tr, x_te))
    return DataBundle(
        name=name,
        train=TensorDataset(x_tr, y_tr.to(torch.int64)),
        test=TensorDataset(x_te, y_te.to(torch.int64)),
        num_classes=num_classes,
        in_chans=x_tr.shape[1],
        image_size=(x_tr.shape[2], x_tr.shape[3]),
        classes=list(classes),
        in_memory=True,
        mean=tuple(mean),
        std=tuple(std),
    )


def flip_labels(labels: torch.Tensor, fraction: float, num_classes: int, *, seed: int = 0) -> torch.Tensor:
    """A copy of ``labels`` with ``round(fraction * N)`` of them flipped to another class.

    Which labels flip is a seeded draw without replacement; each flipped label becomes one of the
    other ``num_classes - 1`` classes, uniformly (symmetric label noise, as in Rolnick et al.
    2017 and the noisy-label literature). Used on the training split only; the test split stays
    clean.

    Args:
        labels: (N,) integer class labels in [0, num_classes).
        fraction: share of labels to flip, in [0, 1).
        num_classes: number of classes (>= 2).
        seed: seed of the draws; the same seed flips the same labels to the same classes.

    Raises:
        ValueError: ``fraction`` outside [0, 1) or ``num_classes < 2``.
    """
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction < 1.0):
        raise ValueError(f"label_noise={fraction!r} must be a fraction in [0, 1)")
    if num_classes < 2:
        raise ValueError(f"label_noise needs num_classes >= 2, got {num_classes}")
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    out = labels.clone()
    n_flip = int(round(fraction * len(labels)))
    idx = torch.randperm(len(labels), generator=g)[:n_flip]
    shift = torch.randint(1, num_classes, (n_flip,), generator=g)  # never 0: a different class
    out[idx] = (labels[idx] + shift.to(labels.dtype)) % num_classes
    return out


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _to_float(
    x: torch.Tensor, scale: float, mean: Sequence[float], std: Sequence[float], image_size: int | None
) -> torch.Tensor:
    """Integer pixels ``(N, C, H, W)`` -> float32 ``(x/scale - mean)/std``, optionally resized to S x S."""
    out = x.to(torch.float32).div_(scale)
    out.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))
    if image_size is not None and out.shape[-2:] != (image_size, image_size) and len(out):
        out = F.interpolate(out, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return out.contiguous()


def _balanced_subset(labels: torch.Tensor, n: int, seed: int, num_classes: int, arg: str) -> torch.Tensor:
    """Sorted indices of ``n`` examples, as equal per class as class sizes allow, seeded.

    Not scikit-learn's stratified split: that one keeps the class *proportions* (an imbalanced
    image folder stays imbalanced), where this keeps classes equal, and it draws other images for
    the same seed, which would change every cached run's data (and result) made with a subset."""
    total = int(labels.numel())
    if isinstance(n, bool) or not isinstance(n, int) or not num_classes <= n <= total:
        raise ValueError(f"{arg} must be an int in [{num_classes}, {total}] (num_classes..split size), got {n!r}")
    g = torch.Generator().manual_seed(seed)
    pools = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        pools.append(idx[torch.randperm(len(idx), generator=g)])
    sizes = [len(p) for p in pools]
    quota = [0] * num_classes
    remaining = n
    while remaining:  # water-filling: share what is left among classes that still have examples
        open_ = [c for c in range(num_classes) if quota[c] < sizes[c]]
        share = remaining // len(open_)
        if share == 0:  # fewer left than open classes: a seeded choice of classes gets one more
            for i in torch.randperm(len(open_), generator=g)[:remaining].tolist():
                quota[open_[i]] += 1
            break
        for c in open_:
            add = min(share, sizes[c] - quota[c])
            quota[c] += add
            remaining -= add
    return torch.cat([p[:q] for p, q in zip(pools, quota)]).sort().values


def _writable_download_root(root: Path | None, name: str) -> Path:
    return root if root is not None else _cache_root() / name


# ---- Fashion-MNIST -------------------------------------------------------------------
def _fashion_candidates(root: Path | None) -> list[Path]:
    bases = [root] if root is not None else default_data_dir("fashion-mnist")
    return [d for b in bases for d in (b, b / "FashionMNIST" / "raw")]


def _find_idx_files(directory: Path) -> dict[str, Path] | list[str]:
    """Map of the four IDX files in ``directory`` (uncompressed preferred), or the missing names."""
    found, missing = {}, []
    for key, stem in _IDX_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{stem}[.gz]")
    return missing if missing else found


def _read_idx(path: Path, reader: Callable[[str], torch.Tensor], tmp: Path) -> torch.Tensor:
    """Parse an IDX file with torchvision's reader; ``.gz`` files are decompressed into ``tmp`` first."""
    if path.suffix == ".gz":
        plain = tmp / path.stem
        with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        path = plain
    return reader(str(path))


def _read_fashion_mnist(root: Path | None, download: bool) -> _Splits:
    candidates = _fashion_candidates(root)
    files = _search_fashion(candidates)
    if isinstance(files, str) and download:
        dl_root = _writable_download_root(root, "fashion-mnist")
        torchvision.datasets.FashionMNIST(str(dl_root), train=True, download=True)
        candidates = [dl_root / "FashionMNIST" / "raw", *candidates]
        files = _search_fashion(candidates)
    if isinstance(files, str):
        raise DataNotFoundError(
            "Fashion-MNIST IDX files not found. Looked in:\n"
            + files
            + "\nTo get the data: `sudo apt-get install dataset-fashion-mnist` (installs to "
            f"{DEBIAN_FASHION_MNIST_DIR}), or pass --data-dir DIR (a directory holding the four "
            "IDX files), or pass --download to fetch them with torchvision.",
            searched=candidates,
        )
    with tempfile.TemporaryDirectory(prefix="resattn-idx-") as tmp:
        x_tr = _read_idx(files["train_images"], read_image_file, Path(tmp))
        y_tr = _read_idx(files["train_labels"], read_label_file, Path(tmp))
        x_te = _read_idx(files["test_images"], read_image_file, Path(tmp))
        y_te = _read_idx(files["test_labels"], read_label_file, Path(tmp))
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        if len(x) != len(y):
            raise ValueError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels")
    return x_tr.unsqueeze(1), y_tr, x_te.unsqueeze(1), y_te, list(torchvision.datasets.FashionMNIST.classes)


def _search_fashion(candidates: list[Path]) -> dict[str, Path] | str:
    """The first directory's files, or a report of what each directory lacked."""
    report = []
    for d in candidates:
        if not d.is_dir():
            report.append(f"  {d}  (no such directory)")
            continue
        result = _find_idx_files(d)
        if isinstance(result, dict):
            return result
        report.append(f"  {d}  (missing: {', '.join(result)})")
    return "\n".join(report)


# ---- digits --------------------------------------------------------------------------
def _read_digits() -> _Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images).to(torch.uint8).unsqueeze(1)  # grey levels 0..16, scaled by 1/16 later
    y = torch.from_numpy(d.target).to(torch.int64)
    idx_tr, idx_te = train_test_split(
        torch.arange(len(y)).numpy(), test_size=_DIGITS_TEST_SIZE, stratify=d.target, random_state=_DIGITS_SPLIT_SEED
    )
    idx_tr, idx_te = torch.from_numpy(idx_tr).sort().values, torch.from_numpy(idx_te).sort().values
    return x[idx_tr], y[idx_tr], x[idx_te], y[idx_te], [str(c) for c in d.target_names]


# ---- CIFAR ---------------------------------------------------------------------------
#: The globals a CIFAR batch pickle may name: numpy arrays (rebuilt from their bytes), nothing
#: that runs other code. Every other global is refused before anything is built.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"the file names {module}.{name}, which a CIFAR batch "
                                         "never does; it is refused without running it")
        return super().find_class(module, name)


def _md5(path: Path) -> str:
    import hashlib
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_cifar_pickle(path: Path, md5: str | None) -> dict:
    """One CIFAR batch, its integrity checked before it is unpickled: a file with the official
    md5 is the release; any other file (a re-pickled copy, a test fixture) is read with
    :class:`_ArrayUnpickler`, which refuses anything but arrays and containers, and a warning
    says it is not the official release. The official ones are read the same way."""
    if md5 is not None and _md5(path) != md5:
        warnings.warn(f"{path}: md5 differs from the official CIFAR release; reading it with an "
                      "unpickler that accepts arrays and containers only", stacklevel=3)
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ValueError(f"{path} is not a CIFAR batch: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a CIFAR batch: it holds a {type(obj).__name__}, not a dict")
    return obj


_CIFAR_CLASSES = {
    "cifar10": torchvision.datasets.CIFAR10,
    "cifar100": torchvision.datasets.CIFAR100,
}


def _cifar_files_present(root: Path, cls: type) -> bool:
    folder = root / cls.base_folder
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return all((folder / f).is_file() for f in names)


def _read_cifar(name: str, root: Path | None, download: bool) -> _Splits:
    cls = _CIFAR_CLASSES[name]
    bases = [root] if root is not None else default_data_dir(name)
    # Accept both the torchvision root and the extracted batch folder itself.
    candidates = [r for b in bases for r in ((b.parent,) if b.name == cls.base_folder else (b,))]
    found = next((r for r in candidates if _cifar_files_present(r, cls)), None)
    if found is None and download:
        found = _writable_download_root(root, name)
        cls(str(found), train=True, download=True)  # downloads, verifies and extracts
    if found is None:
        needed = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        looked = "\n".join(f"  {r / cls.base_folder}" for r in candidates)
        raise DataNotFoundError(
            f"{name} python batches ({', '.join(needed)}) not found. Looked in:\n{looked}\n"
            f"To get the data: pass --download (torchvision fetches {cls.url}), or pass "
            f"--data-dir DIR where DIR contains {cls.base_folder}/.",
            searched=[r / cls.base_folder for r in candidates],
        )
    folder = found / cls.base_folder
    label_key = "fine_labels" if name == "cifar100" else "labels"
    out = []
    for files in (cls.train_list, cls.test_list):
        xs, ys = [], []
        for fname, md5 in files:
            batch = _read_cifar_pickle(folder / fname, md5)
            if "data" not in batch or label_key not in batch:
                raise ValueError(f"{folder / fname}: a CIFAR batch holds 'data' and "
                                 f"{label_key!r}; found {sorted(batch)}")
            data = torch.as_tensor(np.asarray(batch["data"], dtype=np.uint8))
            if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch[label_key]):
                raise ValueError(f"{name}: unexpected batch contents {tuple(data.shape)} with "
                                 f"{len(batch[label_key])} labels in {folder / fname}")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys += [int(v) for v in batch[label_key]]
        out += [torch.cat(xs).contiguous(), torch.tensor(ys, dtype=torch.int64)]
    meta = _read_cifar_pickle(folder / cls.meta["filename"], cls.meta["md5"])
    return (*out, [str(c) for c in meta[cls.meta["key"]]])


# ---- image folders -------------------------------------------------------------------
def _load_imagefolder(
    root: Path | None,
    download: bool,
    train_subset: int | None,
    test_subset: int | None,
    seed: int,
    image_size: int | None,
) -> DataBundle:
    from torchvision.transforms import v2

    if root is None:
        raise ValueError("imagefolder needs data_dir (a directory with train/ and val/ or test/ class folders)")
    if download:
        raise ValueError("imagefolder cannot be downloaded; pass data_dir with train/ and val/ (or test/)")
    train_dir, test_dirs = root / "train", [root / "val", root / "test"]
    test_dir = next((d for d in test_dirs if d.is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataNotFoundError(
            f"image folder dataset not found: need {train_dir} and one of {test_dirs[0]} or {test_dirs[1]}, "
            "each with one sub-folder per class. Pass --data-dir DIR pointing at such a directory.",
            searched=[train_dir, *test_dirs],
        )
    size = image_size or 224
    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    train_tf = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), *to_float])
    test_tf = v2.Compose([v2.ToImage(), v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size), *to_float])
    try:
        train = torchvision.datasets.ImageFolder(str(train_dir), transform=train_tf)
        test = torchvision.datasets.ImageFolder(str(test_dir), transform=test_tf)
    except FileNotFoundError as e:  # no class folders / no images
        raise DataNotFoundError(f"image folder dataset under {root} is unusable: {e}", searched=[train_dir, test_dir]) from e
    if train.classes != test.classes:
        raise ValueError(
            f"class folders differ between {train_dir} ({train.classes}) and {test_dir} ({test.classes})"
        )
    classes = list(train.classes)
    train_ds: Dataset = train
    test_ds: Dataset = test
    if train_subset is not None:
        labels = torch.tensor(train.targets, dtype=torch.int64)
        train_ds = Subset(train, _balanced_subset(labels, train_subset, seed, len(classes), "train_subset").tolist())
    if test_subset is not None:
        labels = torch.tensor(test.targets, dtype=torch.int64)
        test_ds = Subset(test, _balanced_subset(labels, test_subset, seed, len(classes), "test_subset").tolist())
    return DataBundle(
        name="imagefolder",
        train=train_ds,
        test=test_ds,
        num_classes=len(classes),
        in_chans=3,
        image_size=(size, size),
        classes=classes,
        in_memory=False,
        mean=mean,
        std=std,
    )
