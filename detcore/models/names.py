"""Names and numbers the run-file checks need without importing torch:
torchvision's weights names per architecture, channel counts, and which
torchvision COCO weights fit which detector.

``tests/test_model_weights.py`` checks these tables against torchvision's own
weights enums, so they cannot drift silently.
"""

from __future__ import annotations

# torchvision classification weights: architecture -> (enum class name, entry names)
BACKBONE_WEIGHTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "resnet18": ("ResNet18_Weights", ("IMAGENET1K_V1",)),
    "resnet34": ("ResNet34_Weights", ("IMAGENET1K_V1",)),
    "resnet50": ("ResNet50_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2")),
    "resnet101": ("ResNet101_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2")),
    "resnet152": ("ResNet152_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2")),
    "mobilenet_v3_large": ("MobileNet_V3_Large_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2")),
    "mobilenet_v3_small": ("MobileNet_V3_Small_Weights", ("IMAGENET1K_V1",)),
    "mobilenet_v2": ("MobileNet_V2_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2")),
}

RESNET_CHANNELS = {
    18: [64, 128, 256, 512],
    34: [64, 128, 256, 512],
    50: [256, 512, 1024, 2048],
    101: [256, 512, 1024, 2048],
    152: [256, 512, 1024, 2048],
}

# Output channels of the 6 stages torchvision's _mobilenet_extractor uses
# (stem, then each strided block, then the last layer of ``features``).
MOBILENET_STAGE_CHANNELS = {
    "mobilenet_v3_large": [16, 24, 40, 80, 160, 960],
    "mobilenet_v3_small": [16, 16, 24, 40, 96, 576],
    "mobilenet_v2": [32, 24, 32, 64, 160, 1280],
}
# Index in ``features`` of each of those stages.
MOBILENET_STAGE_INDICES = {
    "mobilenet_v3_large": [0, 2, 4, 7, 13, 16],
    "mobilenet_v3_small": [0, 1, 2, 4, 9, 12],
    "mobilenet_v2": [0, 2, 4, 7, 14, 18],
}


def check_out_indices(out_indices, n: int) -> list[int]:
    """``out_indices`` as a list; raises ``ConfigCheckError`` (key
    ``out_indices``) unless they are increasing stage indices in ``0..n-1``."""
    from detcore.errors import ConfigCheckError

    out = list(out_indices)
    if not out or sorted(set(out)) != out or out[0] < 0 or out[-1] >= n:
        raise ConfigCheckError(
            f"out_indices must be increasing stage indices in 0..{n - 1}, got {out}", key="out_indices"
        )
    return out


def check_neck_in_channels(given, channels, backbone: str) -> None:
    """A neck table's explicit ``in_channels`` must be the backbone's output
    channels (the detector passes those). One check, run by the detector's
    run-file check when the backbone declares its channels and again at
    build time for one that does not. Raises ``ConfigCheckError`` (key
    ``neck.in_channels``)."""
    from detcore.errors import ConfigCheckError

    if given is not None and list(given) != list(channels):
        raise ConfigCheckError(
            f"in_channels {list(given)} do not match the output channels of backbone '{backbone}' as "
            f"configured, {list(channels)}; remove in_channels (the detector passes the backbone's) or fix it",
            key="neck.in_channels",
        )


def check_anchor_levels(sizes, levels: int) -> None:
    """``anchor_sizes`` must give one list of sizes per feature map (the
    backbone's outputs plus the neck's extra levels). One check, run at
    config-check time when the levels are known from the run file and at
    build time otherwise. Raises ``ConfigCheckError`` (key ``anchor_sizes``)."""
    from detcore.errors import ConfigCheckError

    if sizes is not None and len(sizes) != levels:
        raise ConfigCheckError(
            f"{len(sizes)} levels of anchor sizes for {levels} feature maps (backbone outputs plus the "
            f"neck's extra levels); give one list of sizes per feature map",
            key="anchor_sizes",
        )


def tiny_channels(width: int) -> list[int]:
    """Channels of the tiny backbone's four stages (strides 4, 8, 16, 32)."""
    return [width, 2 * width, 4 * width, 8 * width]


# torchvision COCO detector weights: detector -> list of
# (enum class name, backbone architecture, variant). The first entry matching a
# model's backbone and variant is what the short name ``COCO_V1`` means.
DETECTOR_WEIGHTS: dict[str, list[tuple[str, str, str]]] = {
    "faster_rcnn": [
        ("FasterRCNN_ResNet50_FPN_Weights", "resnet50", "v1"),
        ("FasterRCNN_ResNet50_FPN_V2_Weights", "resnet50", "v2"),
        ("FasterRCNN_MobileNet_V3_Large_FPN_Weights", "mobilenet_v3_large", "v1"),
        ("FasterRCNN_MobileNet_V3_Large_320_FPN_Weights", "mobilenet_v3_large", "v1"),
    ],
    "mask_rcnn": [
        ("MaskRCNN_ResNet50_FPN_Weights", "resnet50", "v1"),
        ("MaskRCNN_ResNet50_FPN_V2_Weights", "resnet50", "v2"),
    ],
    "retinanet": [
        ("RetinaNet_ResNet50_FPN_Weights", "resnet50", "v1"),
        ("RetinaNet_ResNet50_FPN_V2_Weights", "resnet50", "v2"),
    ],
    "fcos": [
        ("FCOS_ResNet50_FPN_Weights", "resnet50", "v1"),
    ],
}
DETECTOR_WEIGHT_ENTRIES = ("COCO_V1", "DEFAULT")
# torchvision's builders set every FrozenBatchNorm2d's eps to 0 after loading
# these (weights converted from Detectron's Caffe2 models, trained without an
# eps); with eps 1e-5 their outputs drift.
ZERO_EPS_WEIGHTS = frozenset({
    "FasterRCNN_ResNet50_FPN_Weights",
    "MaskRCNN_ResNet50_FPN_Weights",
    "RetinaNet_ResNet50_FPN_Weights",
})


def backbone_arch(table: dict) -> str | None:
    """The torchvision architecture name of a backbone table, if built in."""
    kind = table.get("type")
    if kind == "resnet":
        return f"resnet{table.get('depth', 50)}"
    if kind == "mobilenet_v3":
        return f"mobilenet_v3_{table.get('arch', 'large')}"
    if kind == "mobilenet_v2":
        return "mobilenet_v2"
    return None


def backbone_weight_names(arch: str) -> list[str]:
    enum, entries = BACKBONE_WEIGHTS[arch]
    return [*entries, "DEFAULT"] + [f"{enum}.{e}" for e in entries]


def check_backbone_weights(weights: str | None, arch: str | None) -> None:
    """Raise ``ConfigCheckError`` unless ``weights`` is unset, a file path, or
    a torchvision weights name for ``arch``. Shared by the run-file check and
    the loader, so both say the same thing."""
    from detcore.errors import ConfigCheckError, shorten

    if weights is None or looks_like_path(weights):
        return
    if arch is None or arch not in BACKBONE_WEIGHTS:
        raise ConfigCheckError(
            f"'{shorten(weights)}' is not a file, and this backbone has no torchvision weights; give a path "
            f"to a state-dict file (it must exist)",
            key="weights",
        )
    valid = backbone_weight_names(arch)
    if weights not in valid:
        raise ConfigCheckError(
            f"unknown weights '{shorten(weights)}' for {arch}; valid names: {', '.join(valid)}, or a path to a "
            f"state-dict file",
            key="weights",
        )


def looks_like_path(value: str) -> bool:
    """A weights value naming a file rather than a torchvision weights entry."""
    import os

    return (
        "/" in value
        or os.sep in value
        or value.endswith((".pth", ".pt", ".bin", ".ckpt", ".safetensors"))
        or os.path.exists(value)
    )


def detector_weight_names(detector: str) -> list[str]:
    names = []
    for enum, _, _ in DETECTOR_WEIGHTS.get(detector, []):
        names += [f"{enum}.{e}" for e in DETECTOR_WEIGHT_ENTRIES]
    return names


def resolve_detector_weights(detector: str, name: str, arch: str | None, variant: str) -> tuple[str, str]:
    """``(enum class name, entry)`` for a detector's ``weights`` value, or a
    ValueError whose message says what is valid."""
    options = DETECTOR_WEIGHTS.get(detector, [])
    if not options:
        raise ValueError(f"torchvision publishes no COCO weights for '{detector}'")
    valid = ", ".join(repr(n) for n in [*DETECTOR_WEIGHT_ENTRIES, *detector_weight_names(detector)])
    enum, _, entry = name.rpartition(".")
    if entry not in DETECTOR_WEIGHT_ENTRIES:
        raise ValueError(f"unknown weights '{name}' for {detector}; valid names: {valid}")
    fitting = [o for o in options if (not enum or o[0] == enum)]
    if not fitting:
        raise ValueError(f"unknown weights '{name}' for {detector}; valid names: {valid}")
    for o_enum, o_arch, o_variant in fitting:
        if o_arch == arch and o_variant == variant:
            return o_enum, entry
    wanted = "; ".join(
        f"{o_enum} needs a {_arch_text(o_arch)} backbone and variant = '{o_variant}'"
        for o_enum, o_arch, o_variant in fitting
    )
    raise ValueError(
        f"weights '{name}' do not fit this {detector} (backbone {arch or 'not built in'}, "
        f"variant '{variant}'): {wanted}"
    )


def _arch_text(arch: str) -> str:
    if arch.startswith("resnet"):
        return f"resnet (depth = {arch[6:]})"
    if arch.startswith("mobilenet_v3_"):
        return f"mobilenet_v3 (arch = '{arch[13:]}')"
    return arch


def dense_backbone_defaults(detector: str, plugin: str, backbone: str, args: dict) -> dict:
    """Backbone arguments a detector changes from the backbone's own default:
    RetinaNet and FCOS take ResNet's C3-C5 (``out_indices = [1, 2, 3]``) as
    torchvision's retinanet/fcos builders do, not C2-C5."""
    if detector in ("retinanet", "fcos") and plugin == "detcore.models" and backbone == "resnet":
        if "out_indices" not in args:
            return {"out_indices": [1, 2, 3]}
    return {}
