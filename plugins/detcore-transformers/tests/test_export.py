"""``detcore export`` of a transformers detector: ONNX works and matches
the eager model (the command's own check); TorchScript is refused with one
error that says what to use instead."""

from __future__ import annotations

import pytest

from detcore.testing import assert_user_error, run_detcore, tiny_run, write_runfile

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["dfine", "detr"])
def test_onnx_export_matches_eager_and_torchscript_says_use_onnx(name, tmp_path, tiny, tiny_input):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run = tiny_run(
        model={"type": name, "_replace_": True, "num_classes": 3, "config": tiny[name], **tiny_input[name]},
        data={"val": {"type": "synthetic", "num_images": 2, "image_size": 64, "num_classes": 3, "seed": 1}},
        optimizer={"type": "adamw", "lr": 1e-4},
        train={"max_iters": 1},
        work_dir="w",
    )
    path = write_runfile(tmp_path / "run.toml", run)
    run_detcore("train", path, cwd=tmp_path, check=True)
    ckpt = tmp_path / "w" / "iter_1.pth"

    onnx = run_detcore("export", path, "--checkpoint", ckpt, "--format", "onnx", "--out", "m.onnx", cwd=tmp_path,
                       check=True)
    assert "labels equal" in onnx.stdout, onnx.stdout
    assert (tmp_path / "m.onnx").stat().st_size > 0 and (tmp_path / "m.onnx.json").is_file()

    script = run_detcore("export", path, "--checkpoint", ckpt, "--format", "torchscript", "--out", "m.pt",
                         cwd=tmp_path)
    err = assert_user_error(script, 1)
    assert "cannot be exported to TorchScript" in err and "--format onnx" in err
    assert not (tmp_path / "m.pt").exists()
