"""Loading a trained model for inference: the run file's detector with a
checkpoint's weights, its class names, the evaluation transforms and the
dataset of a split. Shared by :class:`detcore.Detector`, :func:`detcore.test`
and the CLI tools (test, predict, benchmark, export, browse-dataset)."""

from __future__ import annotations

from pathlib import Path

from detcore.errors import CheckpointError, RunFileError

__all__ = [
    "build_dataset",
    "build_model",
    "cat_ids_of",
    "class_names_of",
    "eval_pipeline",
    "load_model",
    "split_table",
]


def split_table(run, split: str | None) -> tuple[str, dict]:
    """``(split, table)`` of the dataset to use: ``split`` as given, or test
    falling back to val."""
    data = run.cfg.data
    if split is None:
        for s in ("test", "val"):
            if getattr(data, s) is not None:
                return s, getattr(data, s)
        raise RunFileError(
            "the run file has no [data.test] or [data.val] table to evaluate on; add one",
            file=str(run.path),
            key="data.test",
        )
    table = getattr(data, split, None)
    if table is None:
        raise RunFileError(
            f"the run file has no [data.{split}] table; add one or choose another --split",
            file=str(run.path),
            key=f"data.{split}",
        )
    return split, table


def build_dataset(run, split: str | None):
    """``(split, dataset)`` built from the run file's ``data.<split>`` table."""
    from detcore.engine import build

    split, _ = split_table(run, split)
    return split, build.build_dataset(run, split)


def eval_pipeline(run, split: str | None = None):
    """The test (else val) dataset's ``transforms`` as a callable
    ``(image, target) -> (image, target)``; ``None`` when it has none. Used
    by predict so images are prepared as in evaluation."""
    from detcore.catalog import Spec
    from detcore.data.transforms import build_pipeline

    try:
        split, table = split_table(run, split)
    except RunFileError:
        return None
    specs = table.get("transforms") or []
    if not specs:
        return None
    return build_pipeline(
        [Spec(run.catalog, "transform", t, f"data.{split}.transforms[{i}]") for i, t in enumerate(specs)]
    )


def build_model(run):
    """The detector of the run file's ``[model]`` table (weights as initialised)."""
    from detcore.engine import build

    return build.build_model(run)


def class_names_of(ckpt: dict) -> list[str] | None:
    meta = ckpt.get("meta") or {}
    names = meta.get("class_names")
    return list(names) if names else None


def cat_ids_of(ckpt: dict) -> list[int] | None:
    meta = ckpt.get("meta") or {}
    ids = meta.get("cat_ids")
    return [int(i) for i in ids] if ids else None


def load_model(run, checkpoint: str | Path, device, *, checkpoint_dict: dict | None = None):
    """``(model, checkpoint dict)``: the run file's detector with the
    checkpoint's weights (no pretrained file is read), in eval mode on ``device``. Every model tensor must
    be in the checkpoint with the same shape: a checkpoint of another model
    is an error naming the differences (unlike ``load_from``, which skips
    them for fine-tuning)."""
    from detcore.engine.checkpoint import check_checkpoint_model
    from detcore.models.pretrained import skip_pretrained
    from detcore.weights import read_checkpoint, weights_of

    ckpt = checkpoint_dict if checkpoint_dict is not None else read_checkpoint(checkpoint)
    check_checkpoint_model(ckpt, run, str(checkpoint))
    state = weights_of(ckpt, str(checkpoint))
    # The checkpoint holds every weight: no backbone/detector `weights` to fetch.
    with skip_pretrained():
        model = build_model(run)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or shape:
        details = []
        if shape:
            details.append(
                "shape differs for "
                + ", ".join(f"{k} ({list(state[k].shape)} in file, {list(own[k].shape)} in model)" for k in shape[:5])
            )
        if missing:
            details.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:5])})")
        raise CheckpointError(
            f"checkpoint '{checkpoint}' does not fit the model of {run.path} "
            f"({run.cfg.model.get('type')}): {'; '.join(details)}. Use the run file the checkpoint "
            f"was trained with."
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    return model.to(device).eval(), ckpt
