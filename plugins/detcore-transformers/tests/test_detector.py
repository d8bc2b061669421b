"""The wrapped transformers detectors against detcore's detector contract
and against transformers' own image processors and losses (tiny real
models with random weights; nothing downloaded)."""

from __future__ import annotations

import math

import pytest
import torch
from detcore_transformers import plugin
from detcore_transformers.detector import HFDetector, build_detector

DETECTORS = ["dfine", "rtdetr_v2", "detr", "deformable_detr"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _batch():
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 80)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 50, 40], [60, 20, 120, 90]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # an image without objects
    ]
    return images, targets


def _build(name, tiny, tiny_input, **kw):
    # Through the run-file factory, with its defaults (mean/std, sizes).
    torch.manual_seed(0)
    return getattr(plugin, name)(num_classes=3, config=tiny[name], **{**tiny_input[name], **kw})


@pytest.mark.parametrize("name", DETECTORS)
def test_training_returns_the_models_own_losses_by_kind(name, tiny, tiny_input):
    model = _build(name, tiny, tiny_input).train()
    images, targets = _batch()
    pixel_values, pixel_mask, frames = model.preprocess(images)
    kwargs = {"pixel_mask": pixel_mask} if pixel_mask is not None else {}
    labels = [model._to_hf_target(t, f) for t, f in zip(targets, frames)]
    torch.manual_seed(1)
    out = model.hf(pixel_values=pixel_values, labels=labels, **kwargs)
    grouped = model._group_losses(out.loss_dict)
    # Grouping by kind keeps transformers' total (its own weighting included).
    assert math.isclose(float(sum(grouped.values())), float(out.loss), rel_tol=1e-5)
    assert all(k.startswith("loss_") for k in grouped) and len(grouped) >= 3

    losses = model(images, targets)
    assert set(losses) == set(grouped)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    # Every trainable parameter gets a gradient (DDP without find_unused_parameters).
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("name", DETECTORS)
def test_eval_output_follows_the_detector_contract(name, tiny, tiny_input):
    model = _build(name, tiny, tiny_input, detections_per_img=15).eval()
    images, _ = _batch()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, img in zip(out, images):
        h, w = img.shape[-2:]
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape == (15, 4) and det["boxes"].dtype == torch.float32
        b = det["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert det["labels"].dtype == torch.int64 and 0 <= int(det["labels"].min()) and int(det["labels"].max()) < 3
        assert (det["scores"][:-1] >= det["scores"][1:]).all()  # sorted, best first


def _reference_decode(model, logits, boxes, sizes):
    """transformers' own post-processing, for comparison."""
    from transformers import DetrImageProcessor, RTDetrImageProcessor

    class Out:
        pass

    o = Out()
    o.logits, o.pred_boxes = logits, boxes
    if model.family.sigmoid:
        return RTDetrImageProcessor().post_process_object_detection(o, threshold=-1, target_sizes=sizes)
    return DetrImageProcessor().post_process_object_detection(o, threshold=-1, target_sizes=sizes)


@pytest.mark.parametrize("name", ["rtdetr_v2", "detr"])
def test_decoding_matches_transformers_post_processing(name, tiny, tiny_input):
    model = _build(name, tiny, tiny_input, detections_per_img=20).eval()
    torch.manual_seed(2)
    logits = torch.randn(2, 20, 4 if name == "detr" else 3)
    # Inside the image: transformers does not clip boxes, detcore's contract does.
    boxes = torch.cat([torch.rand(2, 20, 2) * 0.2 + 0.4, torch.rand(2, 20, 2) * 0.2 + 0.1], dim=-1)
    sizes = [(96, 128), (80, 80)]
    ours = model._decode(logits, boxes, [(128.0, 96.0), (80.0, 80.0)], sizes)
    ref = _reference_decode(model, logits, boxes, sizes)
    for a, b in zip(ours, ref):
        order = b["scores"].argsort(descending=True)[:20]
        torch.testing.assert_close(a["scores"], b["scores"][order])
        torch.testing.assert_close(a["labels"], b["labels"][order])
        torch.testing.assert_close(a["boxes"], b["boxes"][order], atol=1e-4, rtol=1e-5)


def test_preprocessing_matches_the_rt_detr_image_processor(tiny, tiny_input):
    from transformers import RTDetrImageProcessor

    model = _build("dfine", tiny, tiny_input, input_size=[64, 96])
    image = torch.rand(3, 120, 90)
    boxes = torch.tensor([[10.0, 20, 60, 100]])
    ref = RTDetrImageProcessor(size={"height": 64, "width": 96}).preprocess(
        [(image * 255).round().to(torch.uint8)],
        annotations=[{"image_id": 0, "annotations": [{"bbox": [10.0, 20, 50, 80], "category_id": 1, "area": 1.0}]}],
        return_tensors="pt",
    )
    pixels, mask, frames = model.preprocess([(image * 255).round() / 255])
    assert mask is None and pixels.shape == ref["pixel_values"].shape == (1, 3, 64, 96)
    torch.testing.assert_close(pixels, ref["pixel_values"], atol=2 / 255, rtol=0)
    target = model._to_hf_target({"boxes": boxes, "labels": torch.tensor([1])}, frames[0])
    torch.testing.assert_close(target["boxes"], ref["labels"][0]["boxes"])


def test_preprocessing_matches_the_detr_image_processor(tiny, tiny_input):
    from transformers import DetrImageProcessor

    model = _build("detr", tiny, tiny_input, min_size=64, max_size=100)
    images = [torch.rand(3, 120, 90), torch.rand(3, 60, 150)]
    uint8 = [(i * 255).round().to(torch.uint8) for i in images]
    ref = DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 100}).preprocess(uint8, return_tensors="pt")
    pixels, mask, _ = model.preprocess([u / 255 for u in uint8])
    assert pixels.shape == ref["pixel_values"].shape
    torch.testing.assert_close(mask, ref["pixel_mask"].long())
    torch.testing.assert_close(pixels, ref["pixel_values"], atol=0.05, rtol=0)


def test_fine_tuning_from_a_weights_directory_reheads_the_classifier(tmp_path, tiny, tiny_input, caplog):
    import transformers

    # A stand-in for a COCO checkpoint: the tiny architecture with 80 classes.
    torch.manual_seed(0)
    plugin.dfine(num_classes=80, config=tiny["dfine"]).hf.save_pretrained(tmp_path / "coco80")
    file_state = transformers.DFineForObjectDetection.from_pretrained(tmp_path / "coco80").state_dict()

    with caplog.at_level("INFO", logger="detcore"):
        model = build_detector("dfine", 3, weights=str(tmp_path / "coco80"), **tiny_input["dfine"])
    assert isinstance(model, HFDetector) and model.num_classes == 3
    report = model.weights_report
    keys = [k for k, _, _ in report.skipped_shape]
    assert keys and all(f"hf.{k}".startswith(model.class_layers) for k in keys)
    assert not report.missing and not report.unexpected
    assert "re-initialised for the new classes" in report.summary() and "coco80" in caplog.text
    own = model.hf.state_dict()
    same = [k for k in own if not f"hf.{k}".startswith(model.class_layers)]
    assert set(same) <= set(report.loaded)
    for k in same:
        torch.testing.assert_close(own[k], file_state[k])
    # Same class count: nothing re-initialised.
    again = build_detector("dfine", 80, weights=str(tmp_path / "coco80"), **tiny_input["dfine"])
    assert not again.weights_report.skipped_shape


def test_skip_pretrained_builds_the_architecture_without_reading_weights(tmp_path, tiny, tiny_input):
    import detcore

    torch.manual_seed(0)
    plugin.dfine(num_classes=80, config=tiny["dfine"]).hf.save_pretrained(tmp_path / "coco80")
    (tmp_path / "coco80" / "model.safetensors").unlink()  # only config.json is needed
    with detcore.skip_pretrained():
        model = build_detector("dfine", 3, weights=str(tmp_path / "coco80"), **tiny_input["dfine"])
    assert model.weights_report is None and model.num_classes == 3
    assert model.hf.config.d_model == tiny["dfine"]["d_model"]


@pytest.mark.parametrize(("name", "size", "published_m"), [("dfine", "s", 10.0), ("rtdetr_v2", "r18", 20.0)])
def test_size_presets_have_the_published_parameter_counts(name, size, published_m):
    # D-FINE-S: 10M parameters, RT-DETRv2-S: 20M (the authors' tables, 80 classes).
    model = getattr(plugin, name)(num_classes=80, size=size)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(millions - published_m) / published_m < 0.05, millions


def test_a_timm_backbone_through_the_transformers_config(tiny):
    # transformers' own timm integration: any timm model as the backbone of
    # the real-time DETRs, set in the `config` table.
    pytest.importorskip("timm")
    config = dict(tiny["rtdetr_v2"], encoder_in_channels=[128, 256, 512], backbone_config={
        "model_type": "timm_backbone", "backbone": "resnet10t", "out_indices": [2, 3, 4],
        "use_pretrained_backbone": False,
    })
    model = plugin.rtdetr_v2(num_classes=3, config=config, input_size=[64, 64]).train()
    assert type(model.backbone.model).__name__ == "TimmBackbone"
    images, targets = _batch()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def test_class_names_become_the_config_labels(tiny, tiny_input):
    model = _build("rtdetr_v2", tiny, tiny_input)
    model.set_class_names(["cat", "dog", "bird"])
    assert model.hf.config.id2label == {0: "cat", 1: "dog", 2: "bird"}


def test_trains_in_the_runner_with_bf16_and_the_backbone_lr_multiplier(detcore_tester, tiny):
    from detcore.testing import tiny_run

    detcore_tester.register(plugin, "transformers")
    run = tiny_run(
        model={"type": "dfine", "num_classes": 3, "config": tiny["dfine"], "input_size": [64, 64]},
        optimizer={"type": "adamw", "lr": 1e-4, "backbone_lr_mult": 0.5},
        train={"amp": "bf16"},  # bf16 autocast runs on the CPU too
    )
    result = detcore_tester.train(run, iters=2)
    model = result.assert_built("detector", "transformers:dfine")
    backbone = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    groups = result.runner.optimizer.param_groups
    slow = {id(p) for g in groups if g["lr_mult"] == 0.5 for p in g["params"]}
    assert backbone and slow == backbone
    assert result.assert_hook_called("detcore_before_run", "transformers")
    assert model.hf.config.id2label == dict(enumerate(result.runner.class_names))


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"weights": "not a hub id"}, "model.weights", "neither a directory nor a Hugging Face Hub id"),
        ({"weights": "./missing/dir"}, "model.weights", "neither a directory"),
        ({"weights": "ustc-community/dfine-small-coco", "size": "s"}, "model.size", "give size or weights"),
        ({"input_size": [640]}, "model.input_size", "[height, width]"),
        ({"size": "xl"}, "model.size", "expected one of 'n', 's', 'm', 'l', 'x'"),
        ({"score_thresh": 2.0}, "model.score_thresh", "[0, 1]"),
    ],
)
def test_run_file_errors_name_the_key(detcore_tester, table, key, words):
    detcore_tester.register(plugin, "transformers")
    from detcore.testing import tiny_run

    err = detcore_tester.check_error(tiny_run(model={"type": "dfine", "num_classes": 3, **table}))
    assert err.key == key, str(err)
    assert words in str(err)


def test_a_directory_without_config_json_is_refused(detcore_tester, tmp_path):
    from detcore.testing import tiny_run

    detcore_tester.register(plugin, "transformers")
    (tmp_path / "empty").mkdir()
    err = detcore_tester.check_error(tiny_run(model={"type": "dfine", "num_classes": 3, "weights": str(tmp_path / "empty")}))
    assert err.key == "model.weights" and "no config.json" in str(err)


def test_unknown_config_key_is_named_at_build(tiny_input):
    from detcore.errors import ConfigCheckError

    with pytest.raises(ConfigCheckError) as exc:
        build_detector("rtdetr_v2", 3, config={"num_querys": 10}, **tiny_input["rtdetr_v2"])
    assert exc.value.key == "config.num_querys" and "did you mean 'num_queries'" in str(exc.value)


def test_offline_hub_id_not_in_cache_says_what_to_do(tmp_path, monkeypatch, tiny_input):
    from detcore import DetcoreError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DetcoreError) as exc:
        build_detector("dfine", 3, weights="ustc-community/dfine-small-coco", **tiny_input["dfine"])
    assert "hf download ustc-community/dfine-small-coco" in str(exc.value)
