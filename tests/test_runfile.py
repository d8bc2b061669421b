"""Run files: extends, deep merge, --set overrides, validation against the
catalog, and the errors a user gets (through real ``detcore`` processes)."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest

from detcore.errors import RunFileError
from detcore.plugins import get_plugin_manager
from detcore.runfile import load_raw, load_run
from detcore.runfile.loader import merge, parse_override, tomllib
from detcore.testing import assert_user_error, run_detcore

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = FIXTURES / "good.toml"
# In tests/fixtures unless told otherwise, where the fixture plugins are found.
detcore = functools.partial(run_detcore, cwd=FIXTURES)


@pytest.fixture()
def pm():
    # A plugin manager with the fixture plugin and without installed entry
    # points, so these tests see the same catalog whatever else is installed.
    return get_plugin_manager(["fx_components"], search_dirs=[str(FIXTURES)], entrypoints=False)


# ----------------------------------------------------------------------
# loading and merging
# ----------------------------------------------------------------------


def test_extends_deep_merges_and_records_origins(pm):
    run = load_run(GOOD, pm=pm)
    cfg = run.cfg
    assert cfg.model["type"] == "fx_detector"
    assert cfg.model["score_thresh"] == 0.1  # from good.toml
    assert cfg.model["backbone"] == {"type": "fx_backbone", "depth": 18}  # from base.toml
    assert cfg.data.train["root"] == "data/train" and cfg.data.val["root"] == "data/val"
    assert cfg.seed == 1 and cfg.train.max_epochs == 2
    assert cfg.hooks == [{"type": "fx_hook", "every": 2}]
    assert run.raw.file_of("model.backbone.depth").endswith("base.toml")
    assert run.raw.file_of("model.score_thresh").endswith("good.toml")
    assert run.work_dir == Path("work_dirs/good")


def test_overrides_are_toml_values(pm):
    run = load_run(
        GOOD,
        [
            "optimizer.lr=0.02",
            'data.train.classes=["a","b"]',
            "work_dir=out/x",
            "hooks.0.every=5",
            "model.backbone.norm='gn'",
            "train.amp=\"bf16\"",
        ],
        pm=pm,
    )
    assert run.cfg.optimizer.lr == 0.02
    assert run.cfg.data.train["classes"] == ["a", "b"]
    assert run.cfg.work_dir == "out/x"
    assert run.cfg.hooks[0]["every"] == 5
    assert run.cfg.model["backbone"]["norm"] == "gn"
    assert run.cfg.train.amp == "bf16"
    assert run.raw.file_of("optimizer.lr") == "--set"


def test_extends_list_applies_bases_in_order(tmp_path):
    (tmp_path / "a.toml").write_text("seed = 1\n[optimizer]\nlr = 0.1\nmomentum = 0.5\n")
    (tmp_path / "b.toml").write_text("seed = 2\n[optimizer]\nlr = 0.2\n")
    (tmp_path / "run.toml").write_text('extends = ["a.toml", "b.toml"]\n[optimizer]\nweight_decay = 0.0\n')
    data = load_raw(tmp_path / "run.toml").data
    assert data == {"seed": 2, "optimizer": {"lr": 0.2, "momentum": 0.5, "weight_decay": 0.0}}


def test_merge_replaces_a_table_whose_type_changes():
    base = {"model": {"backbone": {"type": "resnet", "depth": 50}, "num_classes": 3}}
    merge(base, {"model": {"backbone": {"type": "tiny", "width": 8}}})
    assert base["model"]["backbone"] == {"type": "tiny", "width": 8}
    merge(base, {"model": {"backbone": {"_replace_": True, "type": "tiny"}}})
    assert base["model"] == {"backbone": {"type": "tiny"}, "num_classes": 3}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("optimizer.lr=0.02", (["optimizer", "lr"], 0.02)),
        ("seed=3", (["seed"], 3)),
        ("train.amp=bf16", (["train", "amp"], "bf16")),
        ('data.train.classes=["a","b"]', (["data", "train", "classes"], ["a", "b"])),
        ("model.backbone={ type = 'tiny' }", (["model", "backbone"], {"type": "tiny"})),
        ("train.deterministic=true", (["train", "deterministic"], True)),
    ],
)
def test_parse_override(item, expected):
    assert parse_override(item) == expected


@pytest.mark.parametrize("item", ["seed", "=3", "a..b=1", "seed=[1,", "work_dir=two words"])
def test_parse_override_rejects_bad_syntax(item):
    with pytest.raises(RunFileError) as info:
        parse_override(item)
    assert info.value.file == "--set" and item in str(info.value)


def test_set_with_no_value_removes_a_key(tmp_path):
    (tmp_path / "run.toml").write_text(
        "seed = 1\n[train]\nmax_iters = 400\nval_interval = 100\n"
        "[[hooks]]\ntype = 'a'\n[[hooks]]\ntype = 'b'\nevery = 2\n[[hooks]]\ntype = 'c'\n"
    )
    raw = load_raw(tmp_path / "run.toml", ["train.max_iters=", "train.max_epochs=24", "hooks[1]=", "seed="])
    assert raw.data["train"] == {"val_interval": 100, "max_epochs": 24}
    assert raw.data["hooks"] == [{"type": "a"}, {"type": "c"}] and "seed" not in raw.data
    assert raw.file_of("train.max_epochs") == "--set"
    assert raw.file_of("hooks[1]").endswith("run.toml")  # no stale origin of the removed item
    assert "hooks[2]" not in raw.origins and "hooks[1].every" not in raw.origins
    with pytest.raises(RunFileError, match=r"no key 'train.max_iter' to remove \(did you mean 'max_iters'\?\)") as info:
        load_raw(tmp_path / "run.toml", ["train.max_iter="])
    assert info.value.file == "--set"
    with pytest.raises(RunFileError, match="index it with 0..2"):
        load_raw(tmp_path / "run.toml", ["hooks[3]="])


def test_both_schedules_say_how_to_switch(tmp_path, pm):
    (tmp_path / "fx_components.py").write_text((FIXTURES / "fx_components.py").read_text())
    text = GOOD.read_text()
    (tmp_path / "base.toml").write_text((FIXTURES / "base.toml").read_text())
    (tmp_path / "good.toml").write_text(text)
    with pytest.raises(RunFileError, match=r"not both .*--set train.max_iters= --set train.max_epochs=N"):
        load_run(tmp_path / "good.toml", ["train.max_iters=10"], pm=pm)
    run = load_run(tmp_path / "good.toml", ["train.max_epochs=", "train.max_iters=10"], pm=pm)
    assert (run.cfg.train.max_epochs, run.cfg.train.max_iters) == (None, 10)


@pytest.mark.slow
def test_docs_switch_from_max_iters_to_max_epochs(tmp_path):
    """docs/runfile.md's command (as `config show`: the same --set handling,
    without the training) on the bundled demo run file, which uses max_iters."""
    repo = Path(__file__).resolve().parents[1]
    doc = (repo / "docs" / "runfile.md").read_text()
    line = next(ln for ln in doc.splitlines() if ln.startswith("detcore train configs/demo_shapes.toml --set"))
    words = line.split()
    args = [w for i, w in enumerate(words) if "--set" in (w, words[i - 1])]  # the --set pairs
    assert "train.max_iters=" in args
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo_shapes.toml").write_text((repo / "configs" / "demo_shapes.toml").read_text())
    made = detcore("coco", "make-shapes", "data/shapes", "--train", "4", "--val", "2", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    proc = detcore("config", "show", "configs/demo_shapes.toml", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    train = tomllib.loads(proc.stdout)["train"]
    assert train["max_epochs"] == 24 and "max_iters" not in train
    # without removing max_iters the same command is refused, saying how to switch
    # docs/runfile.md's example of a check between tables, output as written
    example = re.search(r"<!-- crosscheck-example -->\n```bash\n(.*?)\n```\n\n```\n(.*?)\n```", doc, re.S)
    proc = detcore(*example.group(1).split()[1:], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == example.group(2)
    kept = [a for a in args if a != "train.max_iters="]
    kept = [a for i, a in enumerate(kept) if not (a == "--set" and (i + 1 == len(kept) or kept[i + 1] == "--set"))]
    proc = detcore("config", "check", "configs/demo_shapes.toml", *kept, cwd=tmp_path)
    assert proc.returncode == 2 and "--set train.max_iters=" in proc.stderr


def test_plugins_list_is_found_next_to_the_file_that_names_it(tmp_path, pm):
    # good.toml's base names plugins = ["fx_components"]; the run file that
    # extends it lives elsewhere.
    (tmp_path / "run.toml").write_text(f'extends = "{GOOD.as_posix()}"\nseed = 7\n')
    run = load_run(tmp_path / "run.toml", pm=get_plugin_manager(entrypoints=False))
    assert run.cfg.seed == 7 and run.pm.has_plugin("fx_components")


def test_component_tables_are_checked_in_process(pm):
    with pytest.raises(RunFileError) as info:
        load_run(GOOD, ["model.neck.out_chanels=3"], pm=pm)
    assert info.value.key == "model.neck.out_chanels"
    assert "did you mean 'out_channels'" in str(info.value)


def test_args_the_parent_provides_are_not_required(pm):
    # fx_neck needs in_channels, which fx_detector passes itself
    # (Sub["neck", "in_channels"]): the run file must not be asked for it.
    run = load_run(GOOD, pm=pm)
    assert "in_channels" not in run.cfg.model["neck"]
    with pytest.raises(RunFileError, match="needs argument 'num_classes'"):
        load_run(GOOD, ["model={ type = 'fx_detector', backbone = { type = 'fx_backbone' } }"], pm=pm)


# ----------------------------------------------------------------------
# errors through real `detcore` processes: exit 2, no traceback, file + key
# ----------------------------------------------------------------------

GOOD_REF = f'extends = "{GOOD.as_posix()}"\n'

# name -> (run file text, extra args, things stderr must contain)
ERRORS = {
    "unknown top-level key": (GOOD_REF + "seeed = 3\n", [], ["key 'seeed'", "did you mean 'seed'"]),
    "unknown nested key": (
        GOOD_REF + "[optimizer]\nlrr = 0.1\n",
        [],
        ["key 'optimizer.lrr'", "did you mean 'lr'"],
    ),
    "unknown component argument": (
        GOOD_REF + "[model.backbone]\ndept = 50\n",
        [],
        ["key 'model.backbone.dept'", "did you mean 'depth'", "Its arguments are: depth"],
    ),
    "wrong type in a component": (
        GOOD_REF + '[model.backbone]\ndepth = "50"\n',
        [],
        ["key 'model.backbone.depth'", "expected an integer", "'50'"],
    ),
    "wrong type at the top level": (
        GOOD_REF + '[train]\nmax_epochs = "twelve"\n',
        [],
        ["key 'train.max_epochs'", "expected an integer"],
    ),
    "value outside a Literal": (
        GOOD_REF + '[model.backbone]\nnorm = "bm"\n',
        [],
        ["key 'model.backbone.norm'", "'bn', 'gn'"],
    ),
    "unknown component type": (
        GOOD_REF + '[model.backbone]\ntype = "fx_backbon"\n',
        [],
        ["key 'model.backbone.type'", "unknown backbone 'fx_backbon'", "did you mean 'fx_backbone'"],
    ),
    "unknown runner hook type": (
        GOOD_REF + '[[hooks]]\ntype = "fx_hok"\n',
        [],
        ["key 'hooks[0].type'", "did you mean 'fx_hook'"],
    ),
    "unknown transform in a nested list": (
        GOOD_REF + '[data.train]\ntransforms = [{ type = "random_horizontal_flip" }, { type = "resise" }]\n',
        [],
        ["key 'data.train.transforms[1].type'", "did you mean 'resize'"],
    ),
    "bad extends path": (
        'extends = "bases/missing.toml"\n',
        [],
        ["key 'extends'", "bases/missing.toml", "not found"],
    ),
    "malformed TOML": ("seed = 1\n[model\ntype = 'x'\n", [], ["invalid TOML", "line 2, column"]),
    "set without =": (GOOD_REF, ["--set", "optimizer.lr"], ["--set", "optimizer.lr", "KEY=VALUE"]),
    "set with a bad key path": (GOOD_REF, ["--set", "model..depth=3"], ["--set", "model..depth"]),
    "set with a bad value": (GOOD_REF, ["--set", "optimizer.lr=[0.1,"], ["--set", "not valid TOML"]),
    "set with an unknown key": (
        GOOD_REF,
        ["--set", "optimizer.lrr=0.1"],
        ["--set", "key 'optimizer.lrr'", "did you mean 'lr'"],
    ),
    "set through a scalar": (GOOD_REF, ["--set", "seed.x=1"], ["--set", "'seed' is int"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(ERRORS))
def test_runfile_error_exits_2_without_traceback(case, tmp_path):
    text, extra, needles = ERRORS[case]
    run_file = tmp_path / "run.toml"
    run_file.write_text(text)
    proc = detcore("config", "check", run_file, *extra)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.startswith("detcore: error: ")
    if "--set" not in extra:
        assert str(run_file) in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


@pytest.mark.slow
def test_error_names_the_base_file_that_set_the_key(tmp_path):
    (tmp_path / "base.toml").write_text(GOOD_REF + '[model.backbone]\ndepth = "deep"\n')
    (tmp_path / "run.toml").write_text('extends = "base.toml"\nseed = 3\n')
    proc = detcore("config", "check", tmp_path / "run.toml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'base.toml'}: key 'model.backbone.depth'" in proc.stderr


@pytest.mark.slow
def test_extends_cycle_is_reported_with_the_chain(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "c.toml"\n')
    (tmp_path / "c.toml").write_text('extends = "a.toml"\n')
    proc = detcore("config", "check", tmp_path / "a.toml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "key 'extends'" in proc.stderr and "cycle" in proc.stderr
    chain = " -> ".join(str(tmp_path / n) for n in ("a.toml", "b.toml", "c.toml", "a.toml"))
    assert chain in proc.stderr


@pytest.mark.slow
def test_config_show_prints_the_resolved_file_as_toml(tmp_path):
    proc = detcore("config", "show", GOOD, "--set", "optimizer.lr=0.02", "--set", "hooks.0.every=4")
    assert proc.returncode == 0, proc.stderr
    shown = tomllib.loads(proc.stdout)
    assert shown["optimizer"]["lr"] == 0.02 and shown["hooks"] == [{"type": "fx_hook", "every": 4}]
    # component tables, nested ones included, with every default filled in
    # (from the factories' signatures); defaults of None ("unset") stay out
    assert shown["model"]["backbone"] == {"type": "fx_backbone", "depth": 18, "frozen_stages": 0, "norm": "bn"}
    assert set(shown["model"]) == {"type", "backbone", "num_classes", "neck", "score_thresh"}
    assert shown["model"]["neck"] == {"type": "fx_neck", "out_channels": 32}  # in_channels: required, given by the detector
    assert shown["metrics"] == [{"type": "fx_metric", "iou": 0.5}]
    assert shown["train"]["max_epochs"] == 2 and shown["checkpoint"]["keep"] == 3
    # The printed file is itself a valid run file that resolves to the same thing.
    (tmp_path / "fx_components.py").write_text((FIXTURES / "fx_components.py").read_text())
    (tmp_path / "resolved.toml").write_text(proc.stdout)
    again = detcore("config", "show", tmp_path / "resolved.toml", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert tomllib.loads(again.stdout) == shown


# ----------------------------------------------------------------------
# limits: deep nesting and huge values (issue 16, item 9)
# ----------------------------------------------------------------------

MODEL = '[model]\ntype = "fcos"\nnum_classes = 1\nbackbone = { type = "tiny" }\n'


def _one_error(proc: subprocess.CompletedProcess) -> str:
    err = assert_user_error(proc, 2)
    assert "RecursionError" not in err, err[-2000:]
    return err


@pytest.mark.slow
def test_an_extends_chain_of_1000_files_is_a_named_error(tmp_path):
    for i in range(1000):
        (tmp_path / f"f{i}.toml").write_text(f'extends = "f{i + 1}.toml"\n' if i < 999 else MODEL)
    err = _one_error(detcore("config", "check", "f0.toml", cwd=tmp_path))
    assert "key 'extends': 'extends' chains more than 32 files" in err and "f0.toml -> " in err
    # A chain within the limit still loads.
    (tmp_path / "f30.toml").write_text(MODEL)
    proc = detcore("config", "check", "f0.toml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "text, key",
    [
        ("x = " + "[" * 1000 + "]" * 1000 + "\n", None),  # tomllib itself recurses
        ("x = " + "{a = " * 400 + "1" + "}" * 400 + "\n", None),
        (MODEL.replace("num_classes = 1", "num_classes = " + "[" * 40 + "]" * 40), "model.num_classes" + "[0]" * 31),
    ],
    ids=["array_1000", "table_400", "array_40"],
)
def test_deep_nesting_is_a_named_error(tmp_path, text, key):
    (tmp_path / "run.toml").write_text(text)
    err = _one_error(detcore("config", "check", "run.toml", cwd=tmp_path))
    assert "run.toml" in err and "nested more than 32 levels deep" in err
    if key:
        assert f"key '{key}'" in err


def test_deep_nesting_limits_in_process(tmp_path):
    from detcore.runfile.loader import MAX_NESTING, too_deep

    assert too_deep({"a": {"b": [1, [2]]}}) is None
    deep: list = []
    for _ in range(MAX_NESTING + 1):
        deep = [deep]
    assert too_deep({"x": deep}) == "x" + "[0]" * MAX_NESTING
    with pytest.raises(RunFileError, match="nested more than 32 levels"):
        parse_override("model.x=" + "[" * 600 + "]" * 600)
    with pytest.raises(RunFileError, match="nested more than 32 levels"):
        parse_override("model.x=" + "[" * 40 + "]" * 40)


@pytest.mark.slow
@pytest.mark.parametrize(
    "text, expect",
    [
        ('[model]\ntype = "' + "a" * 10_000_000 + '"\n', "unknown detector 'aaaa"),
        (MODEL + "b" * 1_000_000 + " = 1\n", "has no argument 'bbbb"),
        ('device = "' + "c" * 10_000_000 + '"\n' + MODEL, "must be auto, cpu, cuda or cuda:N, got 'cccc"),
        (MODEL + "[data.train]\ntype = \"coco\"\nann_file = \"" + "d" * 10_000_000 + '"\nimg_dir = "."\n',
         "annotation file 'dddd"),
    ],
    ids=["type", "key", "device", "ann_file"],
)
def test_a_10_mb_value_is_shortened_in_the_error(tmp_path, text, expect):
    (tmp_path / "run.toml").write_text(text)
    err = _one_error(detcore("config", "check", "run.toml", cwd=tmp_path))
    assert expect in err and "characters)" in err
    assert len(err) < 1000, len(err)


def test_shorten_keeps_short_text_and_says_how_long_the_rest_was():
    from detcore.errors import shorten

    assert shorten("resnet") == "resnet"
    out = shorten("x" * 10_000_000)
    assert len(out) < 130 and out.endswith("… (10000000 characters)")
    assert shorten([1] * 100, limit=20).endswith("(300 characters)")
