"""Fixtures: detcore.testing's ``detcore_tester`` and tiny architectures of
each wrapped model (a few thousand parameters, random weights), so tests
build real transformers models in a second and download nothing."""

from __future__ import annotations

import pytest

from detcore.testing import detcore_tester  # noqa: F401

_HEADS = dict(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, decoder_layers=2, num_queries=20,
              encoder_attention_heads=2, decoder_attention_heads=2)
_RESNET = dict(model_type="resnet", hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], embedding_size=16,
               layer_type="basic")

TINY = {
    "dfine": dict(
        _HEADS, encoder_hidden_dim=32, num_denoising=10, decoder_in_channels=[32, 32, 32], lqe_hidden_dim=8,
        encoder_in_channels=[32, 64, 128],
        backbone_config=dict(
            hidden_sizes=[16, 32, 64, 128], stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 32, 64],
            stage_mid_channels=[8, 8, 16, 16], stage_out_channels=[16, 32, 64, 128], stage_num_blocks=[1, 1, 1, 1],
            stage_numb_of_layers=[1, 1, 1, 1], embedding_size=8,
        ),
    ),
    "rtdetr_v2": dict(
        _HEADS, encoder_hidden_dim=32, num_denoising=10, decoder_in_channels=[32, 32, 32],
        encoder_in_channels=[32, 64, 128],
        backbone_config=dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], embedding_size=16),
    ),
    "detr": dict(_HEADS, encoder_layers=1, backbone_config=dict(_RESNET, out_features=["stage4"])),
    "deformable_detr": dict(
        _HEADS, encoder_layers=1, num_feature_levels=3,
        backbone_config=dict(_RESNET, out_features=["stage2", "stage3", "stage4"]),
    ),
}
# Input sizes for the tests: fixed for the real-time DETRs, keep-ratio for the others.
TINY_INPUT = {
    "dfine": {"input_size": [64, 64]},
    "rtdetr_v2": {"input_size": [64, 64]},
    "detr": {"min_size": 64, "max_size": 96},
    "deformable_detr": {"min_size": 64, "max_size": 96},
}


@pytest.fixture()
def tiny():
    return TINY


@pytest.fixture()
def tiny_input():
    return TINY_INPUT
