"""What differs between the transformers detection models detcore wraps:
their classes, architecture presets, class-dependent layers, how their
logits become scores and how their losses are weighted.

The presets follow the authors' configurations as transformers' conversion
scripts write them (``convert_d_fine_original_pytorch_checkpoint_to_hf.py``,
``convert_rt_detr_v2_weights_to_hf.py``), so ``size = "s"`` builds the
architecture of ``ustc-community/dfine-small-coco`` with random weights.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Family:
    model_class: str  # transformers class name
    config_class: str
    presets: dict  # size -> config keyword arguments (nested backbone_config dict merged)
    default_size: str
    # Key prefixes (in the transformers model) of the layers whose shape
    # depends on the number of classes.
    class_layers: tuple[str, ...]
    sigmoid: bool  # focal-style per-class sigmoid scores (else softmax with a no-object class)
    pixel_mask: bool  # the model takes a padding mask
    # None: the model's loss_dict is already weighted (loss = its sum);
    # otherwise the config attribute of each base loss's weight.
    loss_weights: dict | None = None
    hub_ids: dict = attrs.field(factory=dict)  # size -> published COCO weights


_HGNET = dict(model_type="hgnet_v2", out_indices=[2, 3, 4])

_DFINE_BASE = dict(
    backbone_config=dict(_HGNET, hidden_sizes=[64, 128, 256, 512], layer_type="basic", embedding_size=32),
    hidden_expansion=1.0,
    decoder_layers=6,
)
_DFINE_SMALL_BACKBONE = dict(
    hidden_sizes=[128, 256, 512, 1024],
    stem_channels=[3, 16, 16],
    stage_in_channels=[16, 64, 256, 512],
    stage_mid_channels=[16, 32, 64, 128],
    stage_out_channels=[64, 256, 512, 1024],
    stage_num_blocks=[1, 1, 2, 1],
    stage_downsample=[False, True, True, True],
    stage_light_block=[False, False, True, True],
    stage_kernel_size=[3, 3, 5, 5],
    stage_numb_of_layers=[3, 3, 3, 3],
    use_learnable_affine_block=True,
)


def _dfine(backbone: dict, **kwargs) -> dict:
    return {**_DFINE_BASE, **kwargs, "backbone_config": {**_DFINE_BASE["backbone_config"], **backbone}}


DFINE_PRESETS = {
    "n": _dfine(
        dict(_DFINE_SMALL_BACKBONE, out_indices=[3, 4]),
        num_feature_levels=2, encoder_ffn_dim=512, encode_proj_layers=[1], d_model=128, encoder_hidden_dim=128,
        decoder_ffn_dim=512, encoder_in_channels=[512, 1024], decoder_n_points=[6, 6], decoder_in_channels=[128, 128],
        feat_strides=[16, 32], depth_mult=0.5, decoder_layers=3, hidden_expansion=0.34,
    ),
    "s": _dfine(
        _DFINE_SMALL_BACKBONE,
        decoder_layers=3, hidden_expansion=0.5, depth_mult=0.34, decoder_n_points=[3, 6, 3],
        encoder_in_channels=[256, 512, 1024],
    ),
    "m": _dfine(
        dict(
            hidden_sizes=[192, 384, 768, 1536], stem_channels=[3, 24, 32], stage_in_channels=[32, 96, 384, 768],
            stage_mid_channels=[32, 64, 128, 256], stage_out_channels=[96, 384, 768, 1536],
            stage_num_blocks=[1, 1, 3, 1], stage_downsample=[False, True, True, True],
            stage_light_block=[False, False, True, True], stage_kernel_size=[3, 3, 5, 5],
            stage_numb_of_layers=[4, 4, 4, 4], use_learnable_affine_block=True,
        ),
        decoder_layers=4, decoder_n_points=[3, 6, 3], encoder_in_channels=[384, 768, 1536], depth_mult=0.67,
    ),
    "l": _dfine(
        dict(
            hidden_sizes=[256, 512, 1024, 2048], stem_channels=[3, 32, 48], stage_in_channels=[48, 128, 512, 1024],
            stage_mid_channels=[48, 96, 192, 384], stage_out_channels=[128, 512, 1024, 2048],
            stage_num_blocks=[1, 1, 3, 1], stage_downsample=[False, True, True, True],
            stage_light_block=[False, False, True, True], stage_kernel_size=[3, 3, 5, 5],
            stage_numb_of_layers=[6, 6, 6, 6],
        ),
        encoder_ffn_dim=1024, encoder_in_channels=[512, 1024, 2048], decoder_n_points=[3, 6, 3],
    ),
    "x": _dfine(
        dict(
            hidden_sizes=[256, 512, 1024, 2048], stage_in_channels=[64, 128, 512, 1024],
            stage_mid_channels=[64, 128, 256, 512], stage_out_channels=[128, 512, 1024, 2048],
            stage_num_blocks=[1, 2, 5, 2], stage_downsample=[False, True, True, True],
            stage_light_block=[False, False, True, True], stage_kernel_size=[3, 3, 5, 5],
            stage_numb_of_layers=[6, 6, 6, 6], stem_channels=[3, 32, 64],
        ),
        encoder_in_channels=[512, 1024, 2048], encoder_hidden_dim=384, encoder_ffn_dim=2048,
        decoder_n_points=[3, 6, 3], decoder_in_channels=[384, 384, 384], reg_scale=8.0,
    ),
}

_RESNET_VD = dict(model_type="rt_detr_resnet", out_indices=[2, 3, 4])
RTDETR_V2_PRESETS = {
    "r18": dict(
        backbone_config=dict(_RESNET_VD, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic"),
        encoder_in_channels=[128, 256, 512], hidden_expansion=0.5, decoder_layers=3,
    ),
    "r34": dict(
        backbone_config=dict(_RESNET_VD, hidden_sizes=[64, 128, 256, 512], depths=[3, 4, 6, 3], layer_type="basic"),
        encoder_in_channels=[128, 256, 512], hidden_expansion=0.5, decoder_layers=4,
    ),
    "r50_m": dict(backbone_config=dict(_RESNET_VD), hidden_expansion=0.5),
    "r50": dict(backbone_config=dict(_RESNET_VD)),
    "r101": dict(
        backbone_config=dict(_RESNET_VD, depths=[3, 4, 23, 3]),
        encoder_ffn_dim=2048, encoder_hidden_dim=384, decoder_in_channels=[384, 384, 384],
    ),
}

# D-FINE is built on RT-DETR: the same class-dependent layers.
_RTDETR_CLASS_LAYERS = (
    "model.denoising_class_embed.", "model.enc_score_head.", "model.decoder.class_embed.", "class_embed.",
)

_DETR_LOSSES = {"loss_ce": None, "loss_bbox": "bbox_loss_coefficient", "loss_giou": "giou_loss_coefficient"}

FAMILIES = {
    "dfine": Family(
        "DFineForObjectDetection", "DFineConfig", DFINE_PRESETS, "s",
        class_layers=_RTDETR_CLASS_LAYERS,
        sigmoid=True, pixel_mask=False,
        hub_ids={"n": "ustc-community/dfine-nano-coco", "s": "ustc-community/dfine-small-coco",
                 "m": "ustc-community/dfine-medium-coco", "l": "ustc-community/dfine-large-coco",
                 "x": "ustc-community/dfine-xlarge-coco"},
    ),
    "rtdetr_v2": Family(
        "RTDetrV2ForObjectDetection", "RTDetrV2Config", RTDETR_V2_PRESETS, "r18",
        class_layers=_RTDETR_CLASS_LAYERS,
        sigmoid=True, pixel_mask=False,
        hub_ids={"r18": "PekingU/rtdetr_v2_r18vd", "r34": "PekingU/rtdetr_v2_r34vd",
                 "r50_m": "PekingU/rtdetr_v2_r50vd_m", "r50": "PekingU/rtdetr_v2_r50vd",
                 "r101": "PekingU/rtdetr_v2_r101vd"},
    ),
    "deformable_detr": Family(
        "DeformableDetrForObjectDetection", "DeformableDetrConfig", {"r50": {}}, "r50",
        class_layers=("class_embed.", "model.decoder.class_embed."),
        sigmoid=True, pixel_mask=True, loss_weights=_DETR_LOSSES,
        hub_ids={"r50": "SenseTime/deformable-detr"},
    ),
    "detr": Family(
        "DetrForObjectDetection", "DetrConfig", {"r50": {}, "r101": {"backbone": "resnet101"}}, "r50",
        class_layers=("class_labels_classifier.",),
        sigmoid=False, pixel_mask=True, loss_weights=_DETR_LOSSES,
        hub_ids={"r50": "facebook/detr-resnet-50", "r101": "facebook/detr-resnet-101"},
    ),
}
