"""resattn architectures in timm's registry: ``timm.create_model('resattn_resnet50_dual')``.

``import resattn`` registers, with names starting ``resattn_``:

- every architecture, taking every ``timm.create_model`` keyword and every resattn option
  (``pattern``, ``attn``, ``stages``, ...): ``resattn_resnet18/34/50/101/152`` (ImageNet stem) and
  ``resattn_cifar_resnet20/32/44/56/110`` (He et al. 2016, 3x32x32);
- named variants for the headline configurations (see :data:`VARIANTS`): ``_se`` (pattern
  ``branch`` with SE: SE-ResNet, Hu et al. 2018; resattn_resnet50_se is timm's seresnet50 in
  topology and parameter count), ``_cbam`` (``branch`` with CBAM, Woo et al. 2018) and ``_dual``
  (the dual-path pattern with its stable defaults: ECA on the skip, CBAM on the residual,
  near-identity gating with gamma starting at 0, last two stages).

Each name has a ``pretrained_cfg`` (timm's ``generate_default_cfgs``): input size, mean/std,
pool size, crop_pct, interpolation, first_conv and classifier; ImageNet nets 3x224x224 with
ImageNet statistics (bilinear resize to 256, centre crop 224: torchvision's evaluation), CIFAR nets
3x32x32 with CIFAR-10 statistics. No weights are hosted, so the cfgs have no url:
``pretrained=True`` raises a RuntimeError that says so and how to load local or torchvision
weights (``pretrained_cfg_overlay=dict(file=...)`` loads a local checkpoint through timm).
"""
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from .resnet import ResNet, create_resnet

__all__ = ["VARIANTS", "CIFAR10_MEAN", "CIFAR10_STD"]

#: CIFAR-10 training-set per-channel statistics (pixels in [0, 1]), as :mod:`resattn.workflow.data`.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_IMAGENET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_CIFAR_ARCHS = ("cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56",
                "cifar_resnet110")

_SE = dict(pattern="branch", attn="se")
_CBAM = dict(pattern="branch", attn="cbam")
_DUAL = dict(pattern="dual")

#: Named variants: timm name -> (architecture, resattn options).
VARIANTS: Dict[str, tuple] = {
    "resattn_resnet18_se": ("resnet18", _SE),
    "resattn_resnet18_dual": ("resnet18", _DUAL),
    "resattn_resnet50_se": ("resnet50", _SE),
    "resattn_resnet50_cbam": ("resnet50", _CBAM),
    "resattn_resnet50_dual": ("resnet50", _DUAL),
    "resattn_cifar_resnet20_se": ("cifar_resnet20", _SE),
    "resattn_cifar_resnet20_dual": ("cifar_resnet20", _DUAL),
    "resattn_cifar_resnet56_se": ("cifar_resnet56", _SE),
    "resattn_cifar_resnet56_dual": ("cifar_resnet56", _DUAL),
}


def _cfg(arch: str, options: Dict[str, Any]) -> Dict[str, Any]:
    what = ", ".join(f"{k}={v}" for k, v in options.items()) or "no attention"
    common = dict(first_conv="conv1", classifier="fc", license="apache-2.0",
                  origin_url="https://arxiv.org/abs/1512.03385",
                  paper_name="Deep Residual Learning for Image Recognition",
                  description=f"resattn {arch} ({what}); random init, no hosted weights")
    if arch.startswith("cifar_"):
        return dict(common, num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8),
                    crop_pct=1.0, interpolation="bilinear", mean=CIFAR10_MEAN, std=CIFAR10_STD)
    return dict(common, num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
                crop_pct=0.875, interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN,
                std=IMAGENET_DEFAULT_STD)


_ALL: Dict[str, tuple] = {f"resattn_{a}": (a, {}) for a in _IMAGENET_ARCHS + _CIFAR_ARCHS}
_ALL.update(VARIANTS)

# timm's register_model reads ``default_cfgs`` from this module by the entrypoint's name.
default_cfgs = generate_default_cfgs({name: _cfg(arch, opts) for name, (arch, opts) in _ALL.items()})


def _entrypoint(name: str, arch: str, options: Dict[str, Any]):
    def fn(pretrained: bool = False, **kwargs: Any) -> ResNet:
        return create_resnet(name, arch, pretrained, **dict(options, **kwargs))
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    what = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "pattern='none' by default"
    fn.__doc__ = (f"resattn {arch} ({what}); every timm.create_model keyword and every resattn "
                  "option (pattern, attn, stages, ...) is accepted.")
    return fn


for _name, (_arch, _opts) in _ALL.items():
    globals()[_name] = register_model(_entrypoint(_name, _arch, _opts))
del _name, _arch, _opts
