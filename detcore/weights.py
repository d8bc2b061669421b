"""Loading state dicts that only partly fit a model, with a report.

Used for detector-level pretrained weights (``weights = "COCO_V1"``) and for
``load_from``: tensors whose shape differs from the model's (a class-dependent
head, after changing ``num_classes``) are skipped, not fatal.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class LoadReport:
    source: str
    loaded: tuple[str, ...]
    skipped_shape: tuple[tuple[str, tuple, tuple], ...]  # (key, file shape, model shape)
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def summary(self) -> str:
        lines = [
            f"loaded weights from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.skipped_shape)} skipped for shape, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected"
        ]
        for key, src, dst in self.skipped_shape:
            lines.append(f"  skipped (shape {list(src)} in file, {list(dst)} in model): {key}")
        if self.missing:
            lines.append(f"  missing (left as initialised): {', '.join(self.missing[:20])}"
                         + (" ..." if len(self.missing) > 20 else ""))
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {', '.join(self.unexpected[:20])}"
                         + (" ..." if len(self.unexpected) > 20 else ""))
        return "\n".join(lines)


def load_matching(model, state_dict: dict, source: str) -> LoadReport:
    """Copy every tensor of ``state_dict`` whose key and shape match ``model``'s."""
    import torch

    own = model.state_dict()
    loadable, skipped = {}, []
    for key, value in state_dict.items():
        if key not in own or not isinstance(value, torch.Tensor):
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            skipped.append((key, tuple(value.shape), tuple(own[key].shape)))
            continue
        loadable[key] = value
    result = model.load_state_dict(loadable, strict=False)
    skipped_keys = {k for k, _, _ in skipped}
    return LoadReport(
        source=str(source),
        loaded=tuple(loadable),
        skipped_shape=tuple(skipped),
        missing=tuple(k for k in result.missing_keys if k not in skipped_keys),
        # BatchNorm files hold num_batches_tracked, FrozenBatchNorm2d models do not.
        unexpected=tuple(k for k in state_dict if k not in own and not k.endswith("num_batches_tracked")),
    )
