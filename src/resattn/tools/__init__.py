"""Tools that act on a model: :mod:`.convert` (retrofit torchvision/timm ResNets), :mod:`.weights`
(load, save and read checkpoints), :mod:`.monitor`
(gate statistics during training), :mod:`.inspect` (the gates of a trained model), :mod:`.export`
(ONNX / TorchScript), :mod:`.advise` (where attention should go) and :mod:`.bench` (step time and
memory of variants side by side). Each is imported where it is used; ``resattn`` re-exports
``convert``, ``parity_check``, ``advise`` and ``GateMonitor``."""
