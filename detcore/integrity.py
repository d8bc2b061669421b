"""A checkpoint's integrity record: a SHA-256 digest of everything it holds.

``torch.load`` does not check the CRCs of the zip archive a checkpoint is, so
a file with a few kilobytes flipped in the middle loads and silently changes
weights. Every checkpoint detcore writes therefore carries

``integrity``     ``{"sha256": "<hex>", "of": "payload"}``

the digest of every other entry: tensors by dtype, shape and bytes, plain
data (numbers, strings, lists, tuples, dicts) by type and value, in order.
It is computed from the objects, not the file bytes, so it survives being
copied anywhere, stays inside the one atomically written file, and the file
still loads with ``torch.load(weights_only=True)``. Reading a checkpoint
recomputes it (a few hundred MB/s) and a mismatch is a
:class:`~detcore.errors.CheckpointError` saying "checksum mismatch".
Checkpoints written before this (no ``integrity`` entry) load unverified.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from detcore.errors import CheckpointError

__all__ = ["KEY", "payload_digest", "seal", "verify"]

KEY = "integrity"


def payload_digest(obj) -> str:
    """SHA-256 (hex) of ``obj``, a checkpoint's nested dicts, lists, tuples,
    tensors and plain values. Tensors on any device hash by their bytes on
    the CPU; dict order counts, as it does in a state dict."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def seal(ckpt: dict) -> dict:
    """``ckpt`` plus its integrity record (a new dict; ``ckpt`` is unchanged)."""
    body = {k: v for k, v in ckpt.items() if k != KEY}
    return {**body, KEY: {"sha256": payload_digest(body), "of": "payload"}}


def verify(ckpt: dict, path: str | Path) -> bool:
    """Check ``ckpt``'s integrity record. ``True`` when it matches, ``False``
    when there is none (a checkpoint from before detcore wrote one, or a
    file from another program); a mismatch raises :class:`CheckpointError`
    naming ``path``."""
    record = ckpt.get(KEY)
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return False
    body = {k: v for k, v in ckpt.items() if k != KEY}
    actual = payload_digest(body)
    if actual != record["sha256"]:
        raise CheckpointError(
            f"checkpoint '{path}': checksum mismatch: its contents hash to sha256 {actual[:16]}... but it was "
            f"written with {record['sha256'][:16]}...; the file was changed or damaged after it was saved "
            f"(disk, copy or transfer error). Use an earlier checkpoint of the run (`--resume auto` skips this "
            f"one) or copy the file again."
        )
    return True


def _feed(h, obj) -> None:
    # Each value is tagged with its type so that e.g. [1, 2] and (1, 2), or
    # 1 and 1.0 and "1", hash differently.
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            flat = t.cpu().contiguous().reshape(-1)
            h.update(flat.view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}|".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(f"B{len(obj)}|".encode())
        h.update(obj)
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}|".encode())
        h.update(data)
    else:
        # None, bools, ints, floats (repr round-trips exactly), torch.Size,
        # dtypes and whatever else weights_only loading allows.
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())
