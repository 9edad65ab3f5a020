"""timm 1.0.31's interface tests, called directly on every ``timm.list_models('resattn_*')`` name.

timm parametrizes these tests of ``test_models.py`` (vendored beside this file, unmodified) with a
fixed list of its own models, so ``-k resattn`` alone does not reach them. Here each one runs, as
timm wrote it, on every resattn name. The 15 are the tests of that file that check the model
interface on a given name (classifier and pooling, features_only wrappers, forward_intermediates
and pruning, grad checkpointing, meta-device construction and init_weights, checkpoint filter).
Left out, as they test other architectures' options: img_size (ViTs), extra_blocks
(EfficientNet), class tokens, attention pooling, output_stride (dilation), the negative
catavgmax test (resattn supports it), the ResNet-v2 odd-size stem test (CIFAR stems do not
downsample) and tests with no model_name argument.
"""
import pytest
import timm

import test_models as timm_tests

#: (test function of timm's test_models.py, the other arguments it is called with)
INTERFACE_TESTS = [
    ("test_reset_classifier_keeps_pool", {}),
    ("test_features_only_grad_checkpointing_backward", {}),
    ("test_model_forward_intermediates_features", {"batch_size": 1}),
    ("test_model_forward_intermediates", {"batch_size": 1}),
    ("test_feature_getter_stage_ends_torchscript", {}),
    ("test_prune_intermediate_layers_params_used", {}),
    ("test_head_hidden_size", {"model_kwargs": {}}),
    ("test_features_only_feature_cls_class", {}),
    ("test_forward_after_prune_intermediate_layers", {}),
    ("test_prune_intermediate_layers_last_feature", {"stop_early_final": True}),
    ("test_prune_intermediate_layers_contract", {}),
    ("test_prune_to_stem_feature", {}),
    ("test_forward_intermediates_stop_early_final_norm", {"model_kwargs": {}}),
    ("test_model_init_weights_after_to_empty", {"kwargs": {}}),
    ("test_headless_checkpoint_reload", {"kwargs": {}}),
]


@pytest.mark.parametrize("model_name", timm.list_models("resattn_*"))
@pytest.mark.parametrize("test_name,kwargs", INTERFACE_TESTS, ids=[t for t, _ in INTERFACE_TESTS])
def test_timm_interface(test_name, kwargs, model_name):
    getattr(timm_tests, test_name)(model_name=model_name, **kwargs)
