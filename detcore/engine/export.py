"""Exporting a detector to TorchScript or ONNX, and checking the exported
model against eager mode on the same input.

Both formats take images as float 0..1, like the eager model:

* TorchScript (``torch.jit.script``): ``module(images: list[Tensor[3, H, W]])``,
  any size; returns what the scripted detector returns (torchvision
  detectors: ``(losses, detections)``); :func:`run_exported` unwraps it.
* ONNX (the TorchScript-based exporter, a fixed input size): one input
  ``images`` ``[1, 3, H, W]``; outputs ``boxes`` ``[K, 4]`` (xyxy, input
  pixels), ``scores`` ``[K]``, ``labels`` ``[K]`` (0-based) and, for mask
  models, ``masks`` ``[K, 1, H, W]``.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from detcore.errors import DetcoreError

FORMATS = ("torchscript", "onnx")
DEFAULT_OPSET = 17


def _torch():
    import torch

    return torch


def _detections_of(output):
    """The per-image detections list from a (possibly scripted) detector's output."""
    # Scripted torchvision detectors return (losses, detections) whatever the mode.
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], list):
        return output[1]
    return output


def _onnx_wrapper(model, with_masks: bool):
    torch = _torch()

    class OnnxDetector(torch.nn.Module):
        """Tensor in, tensors out: the shape the ONNX exporter needs."""

        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, images):
            det = _detections_of(self.detector([images[0]]))[0]
            out = (det["boxes"], det["scores"], det["labels"])
            if with_masks:
                out = (*out, det["masks"])
            return out

    return OnnxDetector(model)


def export_torchscript(model, path: str | Path) -> Path:
    """Script ``model`` (in eval mode) and save it to ``path``."""
    torch = _torch()
    path = Path(path)
    import warnings

    model.eval()
    try:
        with warnings.catch_warnings():
            # torch.jit's deprecation notice: scripting is still what torchvision
            # detectors support for a Python-free export with dynamic sizes.
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.script(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DetcoreError(
            f"{type(model).__name__} cannot be exported to TorchScript ({type(exc).__name__}: "
            f"{first}). Try --format onnx, or a detector built from torchvision modules "
            f"(fcos, retinanet)."
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    scripted.save(str(tmp))
    tmp.replace(path)
    return path


def require_onnx() -> None:
    """Raise a :class:`DetcoreError` saying what to install when the onnx
    package is missing.

    torch.onnx writes the file with onnx, an optional extra: without it the
    export fails deep inside torch with an error that reads as if the model
    were at fault."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise DetcoreError(
            "exporting to ONNX needs the onnx package, which is not installed. Install it with: "
            "pip install 'detcore[onnx]'"
        ) from None


def export_onnx(
    model,
    path: str | Path,
    height: int,
    width: int,
    *,
    opset: int = DEFAULT_OPSET,
    with_masks: bool = False,
) -> Path:
    """Export ``model`` to ONNX for a fixed ``[1, 3, height, width]`` input."""
    torch = _torch()
    import warnings

    require_onnx()
    path = Path(path)
    model.eval()
    wrapper = _onnx_wrapper(model, with_masks).eval()
    example = torch.rand(1, 3, height, width)
    names = ["boxes", "scores", "labels"] + (["masks"] if with_masks else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Tracing warnings about python values in torchvision's
            # post-processing are expected: the input size is fixed.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=names,
                dynamic_axes={n: {0: "detections"} for n in names},
            )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DetcoreError(
            f"{type(model).__name__} cannot be exported to ONNX (opset {opset}): "
            f"{type(exc).__name__}: {first}"
        ) from None
    tmp.replace(path)
    return path


def run_eager(model, image) -> dict:
    """The eager model's detections (CPU tensors) for one float image ``[3, H, W]``."""
    torch = _torch()
    model.eval()
    with torch.no_grad():
        det = _detections_of(model([image]))[0]
    return {k: v.detach().cpu() for k, v in det.items()}


def run_exported(path: str | Path, fmt: str, image) -> dict:
    """Detections of an exported model for one float image ``[3, H, W]``."""
    torch = _torch()
    path = Path(path)
    if fmt == "torchscript":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit deprecation; "always returns (losses, detections)"
            module = torch.jit.load(str(path), map_location="cpu")
            module.eval()
            with torch.no_grad():
                det = _detections_of(module([image.cpu()]))[0]
        return {k: v.detach().cpu() for k, v in det.items()}
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise DetcoreError(
                "checking an ONNX export needs onnxruntime: pip install onnxruntime "
                "(or export with --no-check)"
            ) from None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        outs = sess.run(None, {"images": image.cpu()[None].numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(names, outs)}
    raise DetcoreError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")


@attrs.frozen
class ExportCheck:
    """How an exported model's detections compare with eager mode's."""

    eager_count: int
    exported_count: int
    max_box_diff: float
    max_score_diff: float
    labels_equal: bool

    @property
    def ok(self) -> bool:
        return (
            self.eager_count == self.exported_count
            and self.labels_equal
            and self.max_box_diff <= 1e-2
            and self.max_score_diff <= 1e-4
        )

    def summary(self) -> str:
        return (
            f"{self.exported_count} detections (eager: {self.eager_count}), largest difference "
            f"boxes {self.max_box_diff:.2e} px, scores {self.max_score_diff:.2e}, labels "
            f"{'equal' if self.labels_equal else 'DIFFER'}"
        )


def compare(eager: dict, exported: dict) -> ExportCheck:
    """Compare two detection sets, independent of their order: detections
    whose scores tie to float precision may come out in either order."""
    torch = _torch()
    n_e, n_x = len(eager["boxes"]), len(exported["boxes"])
    if n_e != n_x or n_e == 0:
        inf = float("inf") if n_e != n_x else 0.0
        return ExportCheck(n_e, n_x, inf, inf, n_e == n_x)
    eb, xb = eager["boxes"].float(), exported["boxes"].float()
    el, xl = eager["labels"].long(), exported["labels"].long()
    # Each detection's nearest counterpart of the same class, both ways.
    dist = (eb[:, None, :] - xb[None, :, :]).abs().amax(-1)
    dist = dist.masked_fill(el[:, None] != xl[None, :], float("inf"))
    box_diff = max(float(dist.min(1).values.max()), float(dist.min(0).values.max()))
    score_diff = float(
        (eager["scores"].float().sort().values - exported["scores"].float().sort().values).abs().max()
    )
    return ExportCheck(n_e, n_x, box_diff, score_diff, bool(torch.equal(el.sort().values, xl.sort().values)))
