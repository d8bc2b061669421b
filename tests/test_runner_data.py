"""Samplers, loaders, the synthetic dataset and prediction post-processing."""

from __future__ import annotations

import pytest
import torch

from detcore.data.samplers import TrainBatchSampler, epoch_batches, shard_indices


def test_shards_cover_the_epoch_equally_without_overlap():
    n, ws, bs = 11, 3, 2
    per_rank = [epoch_batches(n, bs, seed=5, epoch=0, rank=r, world_size=ws) for r in range(ws)]
    assert len({len(b) for b in per_rank}) == 1  # ranks stay in step
    flat = [i for b in per_rank for batch in b for i in batch]
    assert len(flat) == 12 and set(flat) == set(range(n))  # one padded duplicate, nothing missing
    assert epoch_batches(n, bs, seed=5, epoch=0, rank=1, world_size=ws) == per_rank[1]
    assert epoch_batches(n, bs, seed=5, epoch=1, rank=1, world_size=ws) != per_rank[1]
    assert epoch_batches(n, bs, seed=6, epoch=0, rank=1, world_size=ws) != per_rank[1]


def test_aspect_ratio_grouping():
    ratios = [1.5 if i % 3 else 0.5 for i in range(20)]
    batches = epoch_batches(20, 4, seed=0, epoch=0, aspect_ratios=ratios)
    assert sorted(i for b in batches for i in b) == list(range(20))
    full_groups = [b for b in batches[:-2]]
    assert all(len({ratios[i] >= 1 for i in b}) == 1 for b in full_groups)
    for ws in (1, 2, 3):
        lens = {len(epoch_batches(20, 4, seed=0, epoch=2, rank=r, world_size=ws, aspect_ratios=ratios)) for r in range(ws)}
        assert len(lens) == 1


def test_batch_sampler_resumes_by_index_with_the_same_seeds():
    s = TrainBatchSampler(10, 3, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=2)
    assert list(s) == full[2:]
    assert len(s) == 4
    assert len({x.seed for b in full for x in b}) == 10


def test_eval_shards_have_no_duplicates_or_gaps():
    for n in (0, 1, 5, 7):
        for ws in (1, 2, 3, 4):
            flat = sorted(i for r in range(ws) for i in shard_indices(n, r, ws))
            assert flat == list(range(n))


def test_seeded_items_do_not_depend_on_the_loading_process():
    from detcore.catalog import Catalog
    from detcore.data.loader import build_train_loader
    from detcore.plugins import get_plugin_manager

    catalog = Catalog.from_plugin_manager(get_plugin_manager())
    ds = catalog.build("dataset", {"type": "synthetic", "num_images": 6, "image_size": 32,
                                   "transforms": [{"type": "random_horizontal_flip"}]}, path="data.train")
    state = torch.get_rng_state()
    a = [t["boxes"].clone() for _, ts in build_train_loader(ds, batch_size=2, workers=0, seed=3) for t in ts]
    assert torch.equal(torch.get_rng_state(), state)  # loading left the global RNG alone
    b = [t["boxes"].clone() for _, ts in build_train_loader(ds, batch_size=2, workers=2, seed=3) for t in ts]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_synthetic_dataset_contract():
    from torchvision import tv_tensors

    from detcore.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(4, (32, 40), classes=["a", "b"], vary_aspect=True, seed=2)
    img, t = ds[1]
    assert isinstance(img, tv_tensors.Image) and img.dtype == torch.uint8 and img.shape == (3, 40, 32)
    assert isinstance(t["boxes"], tv_tensors.BoundingBoxes) and t["boxes"].canvas_size == (40, 32)
    assert t["labels"].dtype == torch.int64 and t["image_id"] == 1 and t["orig_size"] == (40, 32)
    assert ds.aspect_ratios == [40 / 32, 32 / 40, 40 / 32, 32 / 40]
    assert ds.class_names == ["a", "b"] and len(ds.palette) == 2
    assert torch.equal(ds[1][0], SyntheticDataset(4, (32, 40), classes=["a", "b"], vary_aspect=True, seed=2)[1][0])
    assert ds.labels_of(1) == set(t["labels"].tolist())


def test_synthetic_table_checks():
    from detcore.catalog import Catalog
    from detcore.errors import RunFileError
    from detcore.plugins import get_plugin_manager
    from detcore.runfile.components import validate_component

    catalog = Catalog.from_plugin_manager(get_plugin_manager())
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "dataset", {"type": "synthetic", "image_size": [32]}, "data.train")
    assert err.value.key == "data.train.image_size"
    with pytest.raises(RunFileError, match="palette"):
        validate_component(catalog, "dataset", {"type": "synthetic", "palette": [[0, 0, 300]]}, "data.train")


def test_to_original_rescales_boxes_and_masks():
    from detcore.engine.batches import to_original
    from detcore.engine.evaluation import as_prediction

    out = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([1]),
        "masks": torch.ones(1, 1, 20, 10),
    }
    pred = as_prediction(out, (20, 10), {"image_id": torch.tensor(7), "orig_size": (40, 30)})
    assert pred["image_id"] == 7
    assert torch.allclose(pred["boxes"], torch.tensor([[0.0, 0.0, 30.0, 40.0]]))
    assert pred["masks"].shape == (1, 1, 40, 30) and pred["masks"].dtype == torch.uint8
    same = to_original(out, (20, 10), (20, 10))
    assert torch.equal(same["boxes"], out["boxes"]) and "image_id" not in same
    # predict clamps to the image: a box past the border ends at it
    wide = {**out, "boxes": torch.tensor([[-5.0, 2.0, 12.0, 25.0]])}
    assert torch.equal(to_original(wide, (20, 10), torch.tensor([20, 10]), clamp=True)["boxes"],
                       torch.tensor([[0.0, 2.0, 10.0, 20.0]]))
    assert torch.equal(wide["boxes"], torch.tensor([[-5.0, 2.0, 12.0, 25.0]]))  # the output is left alone


def test_synthetic_plugin_registration_is_light():
    import subprocess
    import sys

    code = (
        "import sys, detcore.builtin.synthetic as p; p.detcore_datasets(); "
        "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'pycocotools') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
