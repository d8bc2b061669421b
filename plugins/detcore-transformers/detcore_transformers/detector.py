"""A transformers object-detection model behind detcore's detector contract.

``model(images, targets)`` in training mode returns the model's own
set-prediction losses (Hungarian matching, focal/varifocal, L1, GIoU,
denoising, ...), grouped by kind; ``model(images)`` in eval mode returns
per-image ``boxes`` (xyxy, in the pixels of the image passed in),
``scores`` and ``labels``. What the transformers image processor does
(resize, rescale, normalise, pad, boxes to normalised cx, cy, w, h) is done
here on tensors, on the model's device, for the whole batch.
"""

from __future__ import annotations

import copy
import logging
import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detcore import ConfigCheckError, DetcoreError, LoadReport, pretrained_skipped
from detcore.errors import did_you_mean
from detcore_transformers.families import FAMILIES, Family
from detcore_transformers.plugin import weights_source

log = logging.getLogger("detcore")


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_config_keys(family: Family, overrides: dict) -> None:
    import transformers

    known = set(getattr(transformers, family.config_class)().to_dict())
    for key in overrides:
        if key not in known:
            raise ConfigCheckError(
                f"{family.config_class} has no key '{key}'{did_you_mean(key, known)}", key=f"config.{key}"
            )


def _labels(num_classes: int) -> dict:
    names = {i: f"class_{i}" for i in range(num_classes)}
    return {"id2label": names, "label2id": {v: k for k, v in names.items()}}


def _hf_model(detector: str, family: Family, num_classes: int, size: str | None, weights: str | None,
              overrides: dict):
    """``(transformers model, LoadReport or None)``."""
    import transformers

    model_cls = getattr(transformers, family.model_class)
    _check_config_keys(family, overrides)
    if weights is None:
        preset = family.presets[size or family.default_size]
        config_cls = getattr(transformers, family.config_class)
        config = config_cls(**_merge(preset, overrides), num_labels=num_classes, **_labels(num_classes))
        return model_cls(config), None
    source = weights_source(weights)
    skipped = pretrained_skipped()
    try:
        if skipped:
            # A whole checkpoint is loaded next: the architecture (config.json) is enough.
            config = model_cls.config_class.from_pretrained(weights, **_labels(num_classes), **overrides)
            model = model_cls(config)
        else:
            model, info = model_cls.from_pretrained(
                weights, ignore_mismatched_sizes=True, output_loading_info=True,
                **_labels(num_classes), **overrides,
            )
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if source == "dir":
            raise DetcoreError(f"model.weights: cannot load '{weights}' ({first}).") from None
        raise DetcoreError(
            f"model.weights: '{weights}' is not in the Hugging Face cache and could not be downloaded "
            f"({first}). On a machine with network access run `hf download {weights}` (it fills "
            f"~/.cache/huggingface/hub, or $HF_HOME), copy that cache here, or give weights as a local "
            f"directory written by save_pretrained()."
        ) from None
    if model.config.model_type != model_cls.config_class.model_type:
        raise DetcoreError(
            f"model.weights: '{weights}' holds a {model.config.model_type} model, not {detector} "
            f"({model_cls.config_class.model_type}); use the detector type that matches the weights."
        )
    if skipped:
        return model, None
    reinitialised = tuple(_mismatched(info["mismatched_keys"]))
    not_loaded = {*info["missing_keys"], *(key for key, _, _ in reinitialised)}
    report = LoadReport(
        source=weights,
        loaded=tuple(key for key in model.state_dict() if key not in not_loaded),
        skipped_shape=reinitialised,
        missing=tuple(sorted(info["missing_keys"])),
        unexpected=tuple(sorted(info["unexpected_keys"])),
        skipped_as=("re-initialised", "for the new classes"),
    )
    return model, report


def _mismatched(entries) -> list[tuple[str, tuple, tuple]]:
    # transformers gives (key, shape in checkpoint, shape in model) triples.
    out = []
    for entry in entries:
        if isinstance(entry, (list, tuple)) and len(entry) == 3:
            out.append((str(entry[0]), tuple(entry[1]), tuple(entry[2])))
        else:
            out.append((str(entry), (), ()))
    return sorted(out)


def build_detector(
    detector: str,
    num_classes: int,
    size: str | None = None,
    weights: str | None = None,
    config: dict | None = None,
    input_size=None,
    size_divisible: int = 32,
    min_size: int | None = None,
    max_size: int | None = None,
    image_mean=None,
    image_std=None,
    score_thresh: float = 0.0,
    detections_per_img: int = 100,
) -> HFDetector:
    family = FAMILIES[detector]
    model, report = _hf_model(detector, family, num_classes, size, weights, dict(config or {}))
    if report is not None:
        log.info(report.summary())
    return HFDetector(
        model, family,
        input_size=tuple(input_size) if input_size is not None else None,
        size_divisible=size_divisible, min_size=min_size, max_size=max_size,
        image_mean=image_mean, image_std=image_std,
        score_thresh=score_thresh, detections_per_img=detections_per_img, weights_report=report,
    )


_GROUP = re.compile(r"^(loss_[a-z]+?)(?:_(?:aux|dn|enc|pre)(?:_\d+)?|_\d+)*$")


class HFDetector(nn.Module):
    """A transformers ``*ForObjectDetection`` model (``self.hf``) with
    detcore's detector interface.

    ``input_size`` (h, w): every image is resized to it (RT-DETR, D-FINE);
    otherwise ``min_size``/``max_size`` resize keeping the aspect ratio
    (DETR's shortest/longest edge), or neither and images stay as they come.
    A batch is padded to its largest image (to a multiple of
    ``size_divisible`` for models without a padding mask). Boxes are
    normalised by the image's own extent for models that take a padding
    mask, by the padded canvas for those that do not.
    """

    def __init__(self, hf: nn.Module, family: Family, *, input_size=None, size_divisible: int = 32,
                 min_size: int | None = None, max_size: int | None = None, image_mean=None, image_std=None,
                 score_thresh: float = 0.0, detections_per_img: int = 100, weights_report=None) -> None:
        super().__init__()
        self.hf = hf
        self.family = family
        self.input_size = input_size
        self.size_divisible = size_divisible if not family.pixel_mask else 1
        self.min_size = min_size
        self.max_size = max_size
        self.score_thresh = score_thresh
        self.detections_per_img = detections_per_img
        self.weights_report = weights_report
        # Prefixes of the class-dependent layers: load_from and the weights
        # check may skip (re-initialise) these when num_classes differs.
        self.class_layers = tuple(f"hf.{p}" for p in family.class_layers)
        normalise = image_mean is not None and image_std is not None
        self.register_buffer("image_mean", torch.tensor(list(image_mean) if normalise else [0.0] * 3).view(3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(list(image_std) if normalise else [1.0] * 3).view(3, 1, 1),
                             persistent=False)

    @property
    def backbone(self) -> nn.Module:
        """The transformers model's backbone (``optimizer.backbone_lr_mult`` scales its parameters)."""
        return self.hf.model.backbone

    @property
    def num_classes(self) -> int:
        return int(self.hf.config.num_labels)

    def set_class_names(self, names: list[str]) -> None:
        """Name the classes in the transformers config (``id2label``), as
        ``save_pretrained`` will write them."""
        if len(names) != self.num_classes:
            return
        self.hf.config.id2label = dict(enumerate(names))
        self.hf.config.label2id = {n: i for i, n in enumerate(names)}

    # -- pre-processing ---------------------------------------------------

    def _resized_shape(self, h: int, w: int) -> tuple[int, int]:
        if self.input_size is not None:
            return int(self.input_size[0]), int(self.input_size[1])
        if self.min_size is None:
            return h, w
        # transformers' get_size_with_aspect_ratio (DETR's resize).
        size = self.min_size
        if self.max_size is not None:
            lo, hi = float(min(h, w)), float(max(h, w))
            if hi / lo * size > self.max_size:
                size = int(round(self.max_size * lo / hi))
        if (h <= w and h == size) or (w <= h and w == size):
            return h, w
        if w < h:
            return int(size * h / w), size
        return size, int(size * w / h)

    def preprocess(self, images: list[Tensor]):
        """``(pixel_values, pixel_mask or None, frames)``: the normalised,
        padded batch and, per image, the (width, height) in input pixels
        that normalised box coordinates are relative to."""
        shapes = [tuple(img.shape[-2:]) for img in images]
        new = [self._resized_shape(h, w) for h, w in shapes]
        resized = []
        for img, (h, w), (nh, nw) in zip(images, shapes, new):
            img = img.float()
            if (nh, nw) != (h, w):
                img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False,
                                    antialias=True)[0]
            resized.append((img - self.image_mean) / self.image_std)
        d = self.size_divisible
        ph = int(math.ceil(max(r.shape[-2] for r in resized) / d) * d)
        pw = int(math.ceil(max(r.shape[-1] for r in resized) / d) * d)
        batch = resized[0].new_zeros((len(resized), 3, ph, pw))
        mask = torch.zeros((len(resized), ph, pw), dtype=torch.long, device=batch.device)
        frames = []
        for i, (r, (h, w), (nh, nw)) in enumerate(zip(resized, shapes, new)):
            batch[i, :, :nh, :nw] = r
            mask[i, :nh, :nw] = 1
            if self.family.pixel_mask:
                frames.append((float(w), float(h)))
            else:
                frames.append((pw * w / nw, ph * h / nh))
        return batch, (mask if self.family.pixel_mask else None), frames

    # -- forward ----------------------------------------------------------

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        pixel_values, pixel_mask, frames = self.preprocess(images)
        kwargs = {"pixel_mask": pixel_mask} if pixel_mask is not None else {}
        if self.training:
            if targets is None:
                raise ValueError("in training mode the detector needs targets")
            labels = [self._to_hf_target(t, f) for t, f in zip(targets, frames)]
            out = self.hf(pixel_values=pixel_values, labels=labels, **kwargs)
            return self._group_losses(out.loss_dict)
        out = self.hf(pixel_values=pixel_values, **kwargs)
        return self._decode(out.logits, out.pred_boxes, frames, [tuple(i.shape[-2:]) for i in images])

    @staticmethod
    def _to_hf_target(target: dict, frame: tuple[float, float]) -> dict:
        boxes = target["boxes"].float()
        fw, fh = frame
        scale = boxes.new_tensor([fw, fh, fw, fh])
        x0, y0, x1, y1 = (boxes / scale).clamp(0, 1).unbind(-1)
        cxcywh = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
        return {"class_labels": target["labels"].long(), "boxes": cxcywh}

    def _group_losses(self, loss_dict: dict) -> dict[str, Tensor]:
        """The model's loss terms summed by kind (``loss_vfl`` gathers the
        final layer's, the auxiliary layers', the denoising queries' and the
        encoder's); their sum is the model's own total loss."""
        weights = self.family.loss_weights
        config = self.hf.config
        groups: dict[str, Tensor] = {}
        for key, value in loss_dict.items():
            m = _GROUP.match(key)
            base = m.group(1) if m else key
            if weights is not None:
                if base not in weights:
                    continue  # not in the model's total (DETR's cardinality_error)
                attr = weights[base]
                value = value * (getattr(config, attr) if attr else 1.0)
            groups[base] = groups[base] + value if base in groups else value
        return groups

    def _decode(self, logits: Tensor, boxes: Tensor, frames, sizes) -> list[dict[str, Tensor]]:
        logits, boxes = logits.float(), boxes.float()
        n_queries, n_classes = logits.shape[1], logits.shape[2]
        if self.family.sigmoid:
            prob = logits.sigmoid().flatten(1)
            k = min(self.detections_per_img, prob.shape[1])
            scores, index = prob.topk(k, dim=1)
            labels = index % n_classes
            query = index // n_classes
        else:
            prob = logits.softmax(-1)[..., :-1]  # the last class is "no object"
            scores, labels = prob.max(-1)
            k = min(self.detections_per_img, n_queries)
            scores, query = scores.topk(k, dim=1)
            labels = labels.gather(1, query)
        picked = boxes.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
        cx, cy, w, h = picked.unbind(-1)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        results = []
        for i, ((fw, fh), (ih, iw)) in enumerate(zip(frames, sizes)):
            b = xyxy[i] * xyxy.new_tensor([fw, fh, fw, fh])
            b[:, 0::2] = b[:, 0::2].clamp(0, iw)
            b[:, 1::2] = b[:, 1::2].clamp(0, ih)
            keep = scores[i] > self.score_thresh
            results.append({"boxes": b[keep], "scores": scores[i][keep], "labels": labels[i][keep]})
        return results
