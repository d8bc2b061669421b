"""Built-in detectors (issue 3): built from run-file tables through the
catalog, one training and one eval step each, fitting a fixed batch, the
argument checks, head swapping by a plugin, freezing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from detcore import hookimpl  # noqa: E402
from detcore.catalog import Catalog  # noqa: E402
from detcore.errors import RunFileError  # noqa: E402
from detcore.plugins import get_plugin_manager  # noqa: E402
from detcore.runfile.components import validate_component  # noqa: E402
from detcore.runfile.loader import tomllib  # noqa: E402


def build(catalog: Catalog, model_toml: str):
    """Validate and build the [model] table of a run-file snippet."""
    table = tomllib.loads(textwrap.dedent(model_toml))["model"]
    validate_component(catalog, "detector", table, "model")
    return catalog.build("detector", table, path="model")


def batch(n: int = 2, h: int = 64, w: int = 80, num_classes: int = 3, masks: bool = False, seed: int = 0):
    """Images with bright rectangles (the objects) on noise, and their targets."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        img = torch.rand(3, h, w, generator=g) * 0.3
        boxes, labels, mask_list = [], [], []
        for _ in range(2):
            bw, bh = int(torch.randint(20, 36, (1,), generator=g)), int(torch.randint(14, 30, (1,), generator=g))
            x0, y0 = int(torch.randint(0, w - bw, (1,), generator=g)), int(torch.randint(0, h - bh, (1,), generator=g))
            label = int(torch.randint(0, num_classes, (1,), generator=g))
            img[label, y0:y0 + bh, x0:x0 + bw] = 1.0
            boxes.append([x0, y0, x0 + bw, y0 + bh])
            labels.append(label)
            m = torch.zeros(h, w, dtype=torch.uint8)
            m[y0:y0 + bh, x0:x0 + bw] = 1
            mask_list.append(m)
        t = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
        if masks:
            t["masks"] = torch.stack(mask_list)
        images.append(img)
        targets.append(t)
    return images, targets


DETECTORS = {
    "fcos": """
        [model]
        type = "fcos"
        num_classes = 3
        backbone = { type = "tiny", width = 16 }
        neck = { type = "fpn", out_channels = 64, extra = "p6p7" }
        """,
    "retinanet": """
        [model]
        type = "retinanet"
        num_classes = 3
        backbone = { type = "tiny", width = 16 }
        neck = { type = "fpn", out_channels = 64, extra = "p6p7" }
        """,
    "faster_rcnn": """
        [model]
        type = "faster_rcnn"
        num_classes = 3
        backbone = { type = "resnet", depth = 18 }
        neck = { type = "fpn", out_channels = 64, extra = "maxpool" }
        box_head = { type = "two_mlp_box_head", representation_size = 128 }
        rpn_batch_size_per_image = 64
        box_batch_size_per_image = 64
        """,
    "mask_rcnn": """
        [model]
        type = "mask_rcnn"
        num_classes = 3
        backbone = { type = "tiny", width = 16, out_indices = [0, 1, 2, 3] }
        neck = { type = "fpn", out_channels = 64, extra = "maxpool" }
        box_head = { type = "two_mlp_box_head", representation_size = 128 }
        mask_head = { type = "mask_rcnn_head", layers = [32, 32] }
        mask_predictor = { type = "mask_rcnn_predictor", dim_reduced = 32 }
        anchor_sizes = [[16], [32], [64], [128], [256]]
        rpn_batch_size_per_image = 64
        box_batch_size_per_image = 64
        """,
}


FIT = {"fcos": (0.02, 20), "retinanet": (0.05, 30), "faster_rcnn": (0.02, 30), "mask_rcnn": (0.02, 30)}


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_trains_evaluates_and_fits(catalog, name):
    torch.manual_seed(0)
    model = build(catalog, DETECTORS[name])
    images, targets = batch(masks=name == "mask_rcnn")

    model.train()
    losses = model(images, targets)
    assert losses and all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())

    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    if name == "mask_rcnn":
        empty["masks"] = torch.zeros(0, *images[0].shape[1:], dtype=torch.uint8)
    losses = model(images, [empty, targets[1]])  # an image without objects
    assert all(torch.isfinite(v) for v in losses.values())

    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == len(images)
    for det, img in zip(out, images):
        assert det["boxes"].shape[1] == 4 and len(det["scores"]) == len(det["labels"]) == len(det["boxes"])
        if len(det["labels"]):
            assert det["labels"].min() >= 0 and det["labels"].max() < 3  # 0-based, no background
            assert det["boxes"][:, 2].max() <= img.shape[2] + 1e-3
        if name == "mask_rcnn":
            assert det["masks"].shape[1:] == (1, *img.shape[1:])

    # RetinaNet's focal loss starts slowly from its 0.01 prior; R-CNN losses
    # are noisy (sampled RoIs): both get more steps.
    lr, steps = FIT[name]
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    totals = []
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        # As the runner's grad_clip: no warmup here, so keep early steps sane.
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        totals.append(float(loss.detach()))
    first, last = sum(totals[:3]) / 3, sum(totals[-3:]) / 3
    assert last < 0.65 * first, f"{name} did not fit one batch: {totals}"


def test_rcnn_labels_are_zero_based_in_training(catalog):
    """Label K-1 is a valid class; K would be out of range (the background
    shift happens inside the model)."""
    model = build(catalog, DETECTORS["faster_rcnn"])
    images, targets = batch(n=1)
    targets[0]["labels"][:] = 2
    model.train()
    assert torch.isfinite(sum(model(images, targets).values()))
    model.eval()
    predictor = model.roi_heads.box_predictor
    assert predictor.cls_score.out_features == 4  # 3 classes + background


def test_rcnn_scripts_with_the_label_shift(catalog):
    model = build(catalog, DETECTORS["faster_rcnn"].replace("[model]", "[model]\nscore_thresh = 0.0")).eval()
    images, _ = batch(n=1)
    with torch.no_grad():
        eager = model(images)[0]
        _, scripted = torch.jit.script(model)(images)
    assert len(eager["labels"]) > 0 and eager["labels"].min() >= 0
    assert torch.equal(scripted[0]["labels"], eager["labels"])


def test_min_size_resizes_inside_the_model_and_maps_boxes_back(catalog):
    model = build(catalog, DETECTORS["fcos"].replace('type = "fcos"', 'type = "fcos"\nmin_size = 128\nmax_size = 256'))
    model.eval()
    images, _ = batch(n=1, h=64, w=80)
    with torch.no_grad():
        det = model(images)[0]
    assert len(det["boxes"]) > 0
    assert det["boxes"][:, 2].max() <= 80 + 1e-3 and det["boxes"][:, 3].max() <= 64 + 1e-3


def test_module_names_follow_torchvision(catalog):
    model = build(catalog, DETECTORS["faster_rcnn"])
    keys = model.state_dict().keys()
    assert "backbone.body.conv1.weight" in keys
    assert "backbone.body.layer4.1.conv2.weight" in keys
    assert "backbone.fpn.inner_blocks.0.0.weight" in keys
    assert "rpn.head.cls_logits.weight" in keys
    assert "roi_heads.box_head.fc6.weight" in keys
    assert "roi_heads.box_predictor.cls_score.weight" in keys


def test_declared_backbone_channels_match_the_built_backbones(catalog):
    from detcore.models import out_channels_of

    cases = [
        ("resnet", {"depth": 18}),
        ("resnet", {"depth": 50, "out_indices": [1, 2, 3]}),
        ("mobilenet_v3", {"arch": "small"}),
        ("mobilenet_v3", {"arch": "large", "out_indices": [2, 3, 5]}),
        ("mobilenet_v2", {}),
        ("tiny", {"width": 16, "out_indices": [0, 1, 2, 3]}),
    ]
    for name, args in cases:
        comp = catalog.get("backbone", name)
        body = catalog.build("backbone", {"type": name, **args}, path="model.backbone")
        with torch.no_grad():
            feats = body.eval()(torch.zeros(1, 3, 64, 64))
        assert [f.shape[1] for f in feats.values()] == body.out_channels == out_channels_of(comp.factory, args)


def test_freezing_and_norm_eval(catalog):
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = catalog.build("backbone", {"type": "resnet", "depth": 18, "frozen_stages": 2, "norm_eval": True}, path="b")
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}
    body.train()
    assert not body.layer4[0].bn1.training and body.layer4[0].conv1.training

    body = catalog.build("backbone", {"type": "resnet", "depth": 18, "trainable_layers": 5}, path="b")
    assert all(p.requires_grad for p in body.parameters())
    body = catalog.build("backbone", {"type": "resnet", "depth": 18, "trainable_layers": 0, "norm": "frozen_bn"},
                         path="b")
    assert not any(p.requires_grad for p in body.parameters())
    assert isinstance(body.bn1, FrozenBatchNorm2d)

    body = catalog.build("backbone", {"type": "mobilenet_v3", "arch": "small", "trainable_layers": 2}, path="b")
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    assert frozen == {str(i) for i in range(9)}  # stages before the last two (features[9:])


def _error(catalog, model_toml: str) -> RunFileError:
    table = tomllib.loads(textwrap.dedent(model_toml))["model"]
    with pytest.raises(RunFileError) as info:
        validate_component(catalog, "detector", table, "model")
    return info.value


def test_bad_depth_unknown_argument_and_fpn_mismatch_name_the_key(catalog):
    err = _error(catalog, """
        [model]
        type = "faster_rcnn"
        num_classes = 3
        backbone = { type = "resnet", depth = 51 }
        """)
    assert err.key == "model.backbone.depth"
    assert "18, 34, 50, 101, 152" in str(err) and "51" in str(err)

    err = _error(catalog, """
        [model]
        type = "retinanet"
        num_classes = 3
        backbone = { type = "resnet", dept = 50 }
        """)
    assert err.key == "model.backbone.dept" and "did you mean 'depth'" in str(err)

    err = _error(catalog, """
        [model]
        type = "fcos"
        num_classes = 3
        backbone = { type = "resnet", depth = 18 }
        neck = { type = "fpn", in_channels = [256, 512, 1024], out_channels = 128, extra = "p6p7" }
        """)
    assert err.key == "model.neck.in_channels"
    assert "[128, 256, 512]" in str(err)  # what resnet18's C3-C5 give

    err = _error(catalog, """
        [model]
        type = "faster_rcnn"
        num_classes = 3
        backbone = { type = "tiny" }
        anchor_sizes = [[32], [64]]
        """)
    assert err.key == "model.anchor_sizes" and "4 feature maps" in str(err)

    err = _error(catalog, """
        [model]
        type = "fcos"
        num_classes = 3
        backbone = { type = "tiny" }
        neck = { type = "fpn", out_channels = 48 }
        """)
    assert err.key == "model.neck.out_channels"

    err = _error(catalog, """
        [model]
        type = "faster_rcnn"
        num_classes = 3
        backbone = { type = "resnet", frozen_stages = 1, trainable_layers = 3 }
        """)
    assert err.key == "model.backbone.trainable_layers"


def test_matching_in_channels_are_accepted_and_build_time_mismatch_is_a_runfile_error(catalog):
    model = build(catalog, """
        [model]
        type = "fcos"
        num_classes = 2
        backbone = { type = "tiny", width = 16 }
        neck = { type = "fpn", in_channels = [32, 64, 128], out_channels = 64, extra = "p6p7" }
        """)
    assert model.backbone.fpn.in_channels == [32, 64, 128]


def test_validation_runs_without_importing_torch(tmp_path):
    """The argument checks are light: they run before torch is imported."""
    code = textwrap.dedent("""
        import sys
        from detcore.catalog import Catalog
        from detcore.runfile.components import validate_component
        from detcore.errors import RunFileError
        from detcore.plugins import get_plugin_manager
        cat = Catalog.from_plugin_manager(get_plugin_manager(entrypoints=False))
        bad = {"type": "faster_rcnn", "num_classes": 3,
               "backbone": {"type": "resnet", "depth": 51}}
        try:
            validate_component(cat, "detector", bad, "model")
        except RunFileError as exc:
            print(exc.key)
        good = {"type": "mask_rcnn", "num_classes": 3, "weights": "COCO_V1",
                "backbone": {"type": "resnet", "depth": 50, "weights": "IMAGENET1K_V2"},
                "neck": {"type": "fpn", "in_channels": [256, 512, 1024, 2048]}}
        validate_component(cat, "detector", good, "model")
        print("torch imported:", "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["model.backbone.depth", "torch", "imported:", "False"]


class HeadPlugin:
    """A third-party head swapped into a built-in detector by name."""

    @hookimpl
    def detcore_heads(self):
        def shallow_fcos_head(in_channels: int, num_anchors: int, num_classes: int, convs: int = 1):
            from torchvision.models.detection.fcos import FCOSHead

            return FCOSHead(in_channels, num_anchors, num_classes, num_convs=convs)

        return {"shallow_fcos_head": shallow_fcos_head}


def test_a_plugin_head_replaces_a_slot():
    pm = get_plugin_manager(entrypoints=False)
    pm.register(HeadPlugin(), name="test-heads")
    catalog = Catalog.from_plugin_manager(pm)
    model = build(catalog, """
        [model]
        type = "fcos"
        num_classes = 5
        backbone = { type = "tiny", width = 16 }
        neck = { type = "fpn", out_channels = 64, extra = "p6p7" }
        head = { type = "shallow_fcos_head", convs = 1 }
        """)
    assert len(model.head.classification_head.conv) == 3  # one conv + norm + relu
    assert model.head.classification_head.cls_logits.out_channels == 5
    images, targets = batch(n=1)
    model.train()
    assert torch.isfinite(sum(model(images, targets).values()))


def test_example_configs_validate(catalog):
    """Every run file under configs/ has a valid [model] table (the data
    tables need the COCO files and are not checked here)."""
    from pathlib import Path

    from detcore.runfile.loader import load_raw

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*_coco.toml")) + sorted((root / "models").glob("*.toml"))
    assert len(files) >= 10
    for f in files:
        raw = load_raw(f)
        validate_component(catalog, "detector", raw.data["model"], "model", file_of=raw.file_of)


@pytest.mark.parametrize("model_toml", [
    # FCOS's GroupNorm(32) on a 32-channel neck: one channel per group, and
    # P7 of a 64 px image is 1x1 (issue 18: "Expected more than 1 value per channel")
    """
    [model]
    type = "fcos"
    num_classes = 3
    backbone = { type = "tiny", width = 16 }
    neck = { type = "fpn", out_channels = 32, extra = "p6p7", norm = "gn" }
    score_thresh = 0.0
    """,
    """
    [model]
    type = "retinanet"
    num_classes = 3
    backbone = { type = "tiny", width = 16 }
    neck = { type = "fpn", out_channels = 32, extra = "p6p7", norm = "gn" }
    head = { type = "retinanet_head", norm = "gn" }
    score_thresh = 0.0
    """,
], ids=["fcos", "retinanet_gn"])
def test_group_norm_heads_take_a_batch_of_one_small_image(catalog, model_toml):
    torch.manual_seed(0)
    model = build(catalog, model_toml)
    images, targets = batch(2, h=64, w=64)
    model.eval()
    with torch.no_grad():
        alone = model(images[:1])[0]
        together = model([images[0], images[0]])[0]
    assert len(alone["boxes"]) > 0
    # the same image gives the same detections alone and in a batch
    # (up to float rounding of batched convolutions)
    torch.testing.assert_close(alone["boxes"], together["boxes"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(alone["scores"], together["scores"], rtol=1e-4, atol=1e-4)
    model.train()
    losses = model(images[:1], targets[:1])
    assert all(torch.isfinite(v) for v in losses.values())
