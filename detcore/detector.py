"""``Detector``: a trained model that takes images and returns predictions.

::

    from detcore import Detector

    det = Detector.from_checkpoint("work_dirs/shapes/latest.pth")
    for pred in det.predict(["a.jpg", "b.jpg"], score_thr=0.5):
        print(pred.names, pred.boxes)

The run file and the class names come from the checkpoint; images get the
test (else val) dataset's transforms, as in evaluation, and boxes come back
in the input image's pixels. ``detcore predict`` runs through this class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from detcore.errors import CheckpointError, DetcoreError, ImageInputError
from detcore.predictions import Prediction

__all__ = ["Detector", "as_image"]


def as_image(image: Any):
    """One image input as a uint8 RGB tensor ``[3, H, W]`` on the CPU.

    Accepts a file path (``str``/``os.PathLike``, EXIF orientation applied),
    a PIL image (any mode, converted to RGB), a numpy array ``[H, W, 3]`` or
    ``[H, W]`` (uint8, or float in 0..1) and a tensor ``[3, H, W]`` or
    ``[1, H, W]`` (uint8, or float in 0..1). Raises :class:`ImageInputError`
    (or :class:`detcore.data.image_io.ImageReadError` for a file that cannot
    be read) naming what was wrong.
    """
    import numpy as np
    import torch

    if isinstance(image, (str, os.PathLike)):
        from detcore.data.image_io import read_image

        return read_image(image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None].repeat(3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ImageInputError(
                f"a numpy image must be [H, W, 3] (HWC, RGB) or [H, W]; got shape {list(image.shape)}"
            )
        tensor = torch.from_numpy(np.array(image, copy=True, order="C")).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        tensor = image.as_subclass(torch.Tensor).detach().cpu()
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
            raise ImageInputError(
                f"a tensor image must be [3, H, W] (CHW, RGB) or [1, H, W]; got shape {list(tensor.shape)}"
            )
    else:
        raise ImageInputError(
            f"cannot use a {type(image).__name__} as an image: give a file path, a PIL image, a numpy "
            f"array [H, W, 3] or a tensor [3, H, W]"
        )
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    if tensor.dtype == torch.uint8:
        return tensor.contiguous()
    if tensor.is_floating_point():
        if tensor.numel() and (float(tensor.min()) < 0 or float(tensor.max()) > 1):
            raise ImageInputError(
                f"a float image must hold values in 0..1; this one spans {float(tensor.min()):g}.."
                f"{float(tensor.max()):g} (give uint8 for 0..255)"
            )
        return (tensor * 255).round().to(torch.uint8).contiguous()
    raise ImageInputError(f"an image must be uint8 (0..255) or float (0..1), not {tensor.dtype}")


def _inputs(images: Any) -> list:
    """``images`` as a list of single images (a batch tensor/array splits)."""
    import numpy as np
    import torch

    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images.unbind(0))
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


class Detector:
    """A detector with its weights, class names, device and evaluation
    transforms. Build it with :meth:`from_checkpoint`; call :meth:`predict`."""

    def __init__(
        self,
        run,
        model,
        *,
        device,
        class_names: Sequence[str],
        checkpoint: str | None = None,
        meta: dict | None = None,
        batch_size: int | None = None,
    ):
        from detcore.engine.inference import eval_pipeline

        self.run = run
        self.model = model
        self.device = device
        self.class_names = tuple(class_names)
        self.checkpoint = checkpoint
        self.meta = dict(meta or {})
        ids = self.meta.get("cat_ids")
        self.cat_ids = tuple(int(i) for i in ids) if ids else None
        self.batch_size = batch_size or run.cfg.data.val_batch_size or run.cfg.data.batch_size
        self._pipeline = eval_pipeline(run)

    def __repr__(self) -> str:
        return (
            f"Detector({self.run.cfg.model.get('type')!r}, {len(self.class_names)} classes, "
            f"device={str(self.device)!r}, checkpoint={self.checkpoint!r})"
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        device: str | None = None,
        run_file: str | os.PathLike | None = None,
        overrides: Sequence[str] | dict | None = None,
        plugins: Sequence[str] = (),
        batch_size: int | None = None,
    ) -> Detector:
        """Load a checkpoint written by ``detcore train``.

        The model is rebuilt from the run file saved in the checkpoint
        (``run_file`` instead, e.g. for a plain state dict) with
        ``overrides`` applied (``{"model.score_thresh": 0.01}`` or
        ``["model.score_thresh=0.01"]``); the weights validation used (an
        EMA, say) are loaded. ``device``: ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``None`` for the run file's (``auto``: CUDA when
        available). ``plugins`` are extra plugin modules (``-p``).
        ``batch_size``: images per forward pass (default the run file's
        validation batch size).
        """
        from detcore.runfile import load_run
        from detcore.weights import read_checkpoint

        ckpt = read_checkpoint(path)
        meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
        text = meta.get("run_file") if run_file is None else None
        if run_file is None and not text:
            raise CheckpointError(
                f"checkpoint '{path}' records no run file (it is not a checkpoint written by detcore "
                f"train); pass the run file it was trained with: "
                f"Detector.from_checkpoint({str(path)!r}, run_file='run.toml')"
            )
        source = run_file if run_file is not None else f"{path} (its saved run file)"
        run = load_run(source, to_set_list(overrides), list(plugins), data_splits=(), text=text)
        return cls.from_run(run, path, device=device, checkpoint_dict=ckpt, batch_size=batch_size)

    @classmethod
    def from_run(
        cls,
        run,
        checkpoint: str | os.PathLike,
        *,
        device: str | None = None,
        checkpoint_dict: dict | None = None,
        batch_size: int | None = None,
    ) -> Detector:
        """The detector of a loaded :class:`detcore.runfile.Run` with
        ``checkpoint``'s weights (what ``detcore predict RUN.toml
        --checkpoint CKPT`` uses)."""
        from detcore.engine.dist_env import resolve_device
        from detcore.engine.inference import load_model

        dev = resolve_device(str(device or run.cfg.device), fix="pass device=\"cpu\"")
        model, ckpt = load_model(run, checkpoint, dev, checkpoint_dict=checkpoint_dict)
        meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
        names = meta.get("class_names")
        if not names:
            names = [str(i) for i in range(int(run.cfg.model.get("num_classes") or 0))]
        return cls(run, model, device=dev, class_names=names, checkpoint=str(checkpoint), meta=meta,
                   batch_size=batch_size)

    # ------------------------------------------------------------------

    def prepare(self, image, index: int = 0):
        """The model input for a uint8 image: the evaluation transforms applied."""
        import torch
        from torchvision import tv_tensors

        if self._pipeline is None:
            return image
        h, w = image.shape[-2:]
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(h, w)),
            "labels": torch.zeros(0, dtype=torch.int64),
            "image_id": index,
            "orig_size": (h, w),
        }
        out, _ = self._pipeline(tv_tensors.Image(image), target)
        return out

    def predict(self, images: Any, *, score_thr: float = 0.3) -> list[Prediction]:
        """Detect objects in ``images``: one :class:`~detcore.predictions.Prediction`
        per image, in order (a list even for a single image).

        ``images``: one image or a list of them, each a file path, a PIL
        image, a numpy array (``[H, W, 3]`` uint8) or a tensor (``[3, H,
        W]``, uint8 or float 0..1); a ``[N, 3, H, W]`` tensor or ``[N, H, W,
        3]`` array is N images. Detections scoring below ``score_thr`` are
        dropped. Images go through the model ``batch_size`` at a time.
        """
        if not 0.0 <= float(score_thr) <= 1.0:
            raise DetcoreError(f"score_thr must be in [0, 1], got {score_thr}")
        items = _inputs(images)
        out: list[Prediction] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            loaded = []
            for i, item in enumerate(chunk, start):
                image = as_image(item)
                path = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
                loaded.append((image, self.prepare(image, i), path))
            out.extend(self._forward(loaded, score_thr))
        return out

    def _forward(self, loaded: list, score_thr: float) -> list[Prediction]:
        import torch

        from detcore.engine.batches import image_to_float, to_original

        if not loaded:
            return []
        with torch.inference_mode():
            outputs = self.model([image_to_float(m, self.device) for _, m, _ in loaded])
        preds = []
        for (image, model_input, path), det in zip(loaded, outputs):
            h, w = image.shape[-2:]
            det = to_original(det, tuple(model_input.shape[-2:]), (h, w), clamp=True)
            boxes = det["boxes"]
            keep = det["scores"] >= score_thr
            masks = det.get("masks")
            preds.append(Prediction(
                boxes=boxes[keep], scores=det["scores"][keep], labels=det["labels"][keep],
                class_names=self.class_names, image=image,
                masks=None if masks is None else masks[keep], path=path, cat_ids=self.cat_ids,
            ))
        return preds

    def _predict_read(self, images: Sequence, paths: Sequence[str], *, score_thr: float,
                      start_index: int = 0) -> list[Prediction]:
        """Like :meth:`predict` for uint8 ``[3, H, W]`` images already read
        from ``paths`` (``detcore predict`` reads each file itself so that one
        broken file is reported and skipped); one forward pass."""
        loaded = [(img, self.prepare(img, start_index + i), p) for i, (img, p) in enumerate(zip(images, paths))]
        return self._forward(loaded, score_thr)


def to_set_list(overrides: Sequence[str] | dict | None) -> list[str]:
    """``{"optimizer.lr": 0.02}`` (or ``["optimizer.lr=0.02"]``) as ``--set`` items."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        from detcore.runfile.toml_writer import toml_value

        items = []
        for key, value in overrides.items():
            try:
                items.append(f"{key}={toml_value(value)}")
            except TypeError:
                raise DetcoreError(
                    f"override {key!r}: a {type(value).__name__} cannot go in a run file; use numbers, "
                    f"strings, booleans, lists and dicts"
                ) from None
        return items
    if isinstance(overrides, str):
        return [overrides]
    return [str(o) for o in overrides]

