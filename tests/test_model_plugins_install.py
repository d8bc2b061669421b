"""The model-library plugins as a user installs them: ``pip install
./plugins/detcore-transformers ./plugins/detcore-timm`` into a fresh virtual
environment next to detcore and detcore-coco (their dependencies, torch,
transformers and timm, come from this environment; nothing is downloaded).
Both then appear in ``detcore plugins`` with their versions, and their run
files validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plugin_system import make_venv

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_transformers_and_timm_plugins_install_into_a_fresh_venv(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    venv = make_venv(tmp_path / "venv")
    install = venv.run(
        f"python -m pip install --no-index --no-build-isolation {REPO / 'plugins/detcore-transformers'} "
        f"{REPO / 'plugins/detcore-timm'}",
        tmp_path,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    where = venv.run("python -c 'import detcore_transformers, detcore_timm; print(detcore_transformers.__file__); "
                     "print(detcore_timm.__file__)'", tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv.root)) for line in where.stdout.split()), where.stdout

    listed = venv.run("detcore plugins", tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "transformers  (detcore-transformers 0.1.0)" in listed.stdout
    assert "detectors     deformable_detr, detr, dfine, rtdetr_v2" in listed.stdout
    assert "timm  (detcore-timm 0.1.0)" in listed.stdout
    assert "backbones     timm" in listed.stdout

    # The README's commands (from a scratch directory instead of the repository root).
    made = venv.run("detcore coco make-shapes data/custom", tmp_path)
    assert made.returncode == 0, made.stderr
    checked = venv.run(f"detcore config check {REPO / 'configs/custom/dfine_s_finetune.toml'}", tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK (detector 'dfine'" in checked.stdout


def _toml_blocks(path: Path, after: str) -> list[str]:
    text = path.read_text(encoding="utf-8").split(after, 1)[1]
    return [block.split("```", 1)[0] for block in text.split("```toml\n")[1:]]


def test_documented_model_tables_validate(tmp_path):
    """The [model] tables of docs/models.md's transformers/timm section and of
    both plugins' READMEs, as written, pass the run-file check."""
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    import tomllib
    from detcore_timm import plugin as timm_plugin
    from detcore_transformers import plugin as transformers_plugin

    from detcore.testing import DetcoreTester, tiny_run

    tester = DetcoreTester(tmp_path)
    tester.register(transformers_plugin, "transformers")
    tester.register(timm_plugin, "timm")
    blocks = [
        *_toml_blocks(REPO / "docs/models.md", "## Models from transformers and timm"),
        *_toml_blocks(REPO / "plugins/detcore-transformers/README.md", "# detcore-transformers"),
        *_toml_blocks(REPO / "plugins/detcore-timm/README.md", "# detcore-timm"),
    ]
    assert len(blocks) == 5
    for block in blocks:
        model = tomllib.loads(block)["model"]
        run = tester.load(tiny_run({"model": {"_replace_": True, **model}}))
        assert run.cfg.model["type"] == model["type"]
