"""A component check sees the arguments its parent passes (``check_with``'s
``ctx``): a head constraint on ``in_channels``, which the detector passes from
the neck, fails at ``model.neck.out_channels`` (the key the user can change),
both when the run file is checked and when the model is built."""

from __future__ import annotations

import pytest

from detcore import ConfigCheckError, check_with, hookimpl
from detcore.catalog import Catalog
from detcore.errors import RunFileError
from detcore.plugins import get_plugin_manager
from detcore.runfile.components import validate_component

SEEN: list[dict] = []


def _wide_enough(args: dict, ctx) -> None:
    SEEN.append({"path": ctx.path, **args})
    channels = args.get("in_channels")  # passed by the detector: absent when the table is checked alone
    if channels is not None and channels % 64:
        raise ConfigCheckError(f"needs in_channels divisible by 64 (grouped convs), got {channels}", key="in_channels")


class GroupedHeadPlugin:
    @hookimpl
    def detcore_heads(self):
        @check_with(_wide_enough)
        def grouped_fcos_head(in_channels: int, num_anchors: int, num_classes: int, convs: int = 1):
            from torchvision.models.detection.fcos import FCOSHead

            return FCOSHead(in_channels, num_anchors, num_classes, num_convs=convs)

        return {"grouped_fcos_head": grouped_fcos_head}


@pytest.fixture()
def catalog():
    pm = get_plugin_manager(entrypoints=False)
    pm.register(GroupedHeadPlugin(), name="test-grouped-heads")
    SEEN.clear()
    return Catalog.from_plugin_manager(pm)


def _model(out_channels: int) -> dict:
    return {
        "type": "fcos",
        "num_classes": 3,
        "backbone": {"type": "tiny", "width": 16},
        "neck": {"type": "fpn", "out_channels": out_channels, "extra": "p6p7"},
        "head": {"type": "grouped_fcos_head"},
    }


def test_config_check_gives_the_head_check_what_the_detector_passes(catalog):
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "detector", _model(96), "model")
    assert err.value.key == "model.neck.out_channels"
    text = str(err.value)
    assert "divisible by 64" in text and "in_channels = 96" in text and "'neck.out_channels'" in text
    # The head's check ran twice: alone (no in_channels), then with the detector's values.
    assert {"path": "model.head"} in SEEN
    assert {"path": "model.head", "in_channels": 96, "num_classes": 3, "num_anchors": 1} in SEEN
    SEEN.clear()
    validate_component(catalog, "detector", _model(128), "model")
    assert {"path": "model.head", "in_channels": 128, "num_classes": 3, "num_anchors": 1} in SEEN


def test_build_time_check_names_the_parent_key(catalog):
    """A parent that cannot tell at config time (here: building directly,
    skipping the run-file check) still reports the key the value comes from."""
    with pytest.raises(RunFileError) as err:
        catalog.build("detector", _model(96), path="model")
    assert err.value.key == "model.neck.out_channels" and "in_channels = 96" in str(err.value)
    model = catalog.build("detector", _model(128), path="model")
    assert model.head.classification_head.cls_logits.in_channels == 128


def test_a_passed_argument_without_a_source_is_not_blamed_on_an_unwritten_key(catalog):
    spec_table = {"type": "grouped_fcos_head"}
    from detcore.catalog import Spec

    spec = Spec(catalog, "head", spec_table, "model.head")
    with pytest.raises(RunFileError) as err:
        spec(in_channels=32, num_anchors=1, num_classes=2)
    assert err.value.key == "model.head" and "enclosing component passes it" in str(err.value)
