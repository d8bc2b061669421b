"""LR schedule values at chosen iterations, and the auto-scale-lr rule."""

from __future__ import annotations

import math

import pytest
import torch

from detcore.engine.lr_schedule import LRSchedule, lr_factor_fn
from detcore.engine.optim import scaled_lr
from detcore.runfile.schema import LRScheduleConfig


def lrs(cfg, max_iters, ipe, its, base=0.02):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = LRSchedule(opt, lr_factor_fn(cfg, max_iters, ipe))
    out = []
    for it in its:
        sched.set_iter(it)
        out.append(sched.get_last_lr()[0])
    return out


def test_linear_warmup_then_multistep_by_epoch():
    # MMDetection's 1x schedule shape: 12 epochs, steps at 8 and 11, 500 warmup iters.
    cfg = LRScheduleConfig(type="multistep", milestones=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001)
    ipe = 1000
    got = lrs(cfg, 12 * ipe, ipe, [0, 250, 499, 500, 7999, 8000, 10999, 11000, 11999])
    want = [
        0.02 * 0.001,
        0.02 * (0.001 + 0.999 * 250 / 500),
        0.02 * (0.001 + 0.999 * 499 / 500),
        0.02,
        0.02,
        0.002,
        0.002,
        0.0002,
        0.0002,
    ]
    assert got == pytest.approx(want, rel=1e-12)


def test_multistep_by_iteration_and_constant_warmup():
    cfg = LRScheduleConfig(type="multistep", by_epoch=False, milestones=[30, 60], gamma=0.5, warmup="constant", warmup_iters=10, warmup_ratio=0.1)
    assert lrs(cfg, 100, 7, [0, 9, 10, 29, 30, 59, 60], base=1.0) == pytest.approx([0.1, 0.1, 1, 1, 0.5, 0.5, 0.25])


def test_cosine_with_warmup_and_floor():
    cfg = LRScheduleConfig(type="cosine", warmup="linear", warmup_iters=10, warmup_ratio=0.1, min_lr_ratio=0.05)
    got = lrs(cfg, 100, 10, [0, 5, 10, 50, 75, 100], base=1.0)
    cos = lambda t: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / 100))  # noqa: E731
    want = [cos(0) * 0.1, cos(5) * (0.1 + 0.9 * 0.5), cos(10), cos(50), cos(75), 0.05]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[3] == pytest.approx(0.525)


def test_step_and_poly():
    step = LRScheduleConfig(type="step", step_size=3, gamma=0.1, warmup="none")
    assert lrs(step, 90, 10, [0, 29, 30, 60], base=1.0) == pytest.approx([1, 1, 0.1, 0.01])
    poly = LRScheduleConfig(type="poly", power=2.0, warmup="none")
    assert lrs(poly, 100, 10, [0, 50, 100], base=1.0) == pytest.approx([1, 0.25, 0])


def test_state_round_trip_keeps_lr():
    cfg = LRScheduleConfig(type="cosine", warmup_iters=0)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.1}], lr=0.1)
    sched = LRSchedule(opt, lr_factor_fn(cfg, 10, 1))
    sched.set_iter(4)
    state = sched.state_dict()
    opt2 = torch.optim.SGD([{"params": [p], "lr": 0.1}], lr=0.1)
    sched2 = LRSchedule(opt2, lr_factor_fn(cfg, 10, 1))
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_auto_scale_lr_arithmetic():
    # lr 0.01 tuned for 4 GPUs x 2 images (base 8) -> 16 GPUs x 4 images.
    assert scaled_lr(0.01, batch_size=4, world_size=16, base_batch_size=8) == pytest.approx(0.08)
    assert scaled_lr(0.02, batch_size=2, world_size=8, base_batch_size=16) == pytest.approx(0.02)
    assert scaled_lr(0.02, batch_size=2, world_size=1, base_batch_size=16, accumulate=4) == pytest.approx(0.01)


def test_schema_rejects_bad_schedules():
    from detcore.errors import ConfigCheckError

    with pytest.raises(ConfigCheckError, match="step_size"):
        LRScheduleConfig(type="step")
    with pytest.raises(ConfigCheckError, match="increasing"):
        LRScheduleConfig(type="multistep", milestones=[8, 3])


def test_flat_cosine_by_epoch_matches_hand_formula():
    # D-FINE/DEIM's FlatCosineLRScheduler shape: 10 epochs of 20 iterations,
    # flat until epoch 4, cosine to half the LR at epoch 8, then flat at half.
    cfg = LRScheduleConfig(type="flat_cosine", flat_until=4, decay_until=8, min_lr_ratio=0.5,
                           warmup="linear", warmup_iters=10, warmup_ratio=0.1)
    its = [0, 5, 10, 79, 80, 100, 120, 159, 160, 199]
    got = lrs(cfg, 200, 20, its, base=0.0004)

    def hand(i):
        warm = 0.1 + 0.9 * i / 10 if i < 10 else 1.0
        if i < 80:
            sched = 1.0
        elif i < 160:
            sched = 0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi * (i - 80) / 80))
        else:
            sched = 0.5
        return 0.0004 * warm * sched

    assert got == pytest.approx([hand(i) for i in its], rel=1e-12)
    assert got[6] == pytest.approx(0.0004 * 0.75)  # iteration 120: half-way through the decay
    assert got[-1] == pytest.approx(0.0002)


def test_flat_cosine_by_iteration_decays_to_the_end():
    cfg = LRScheduleConfig(type="flat_cosine", by_epoch=False, flat_until=30, warmup="none")
    got = lrs(cfg, 100, 7, [0, 29, 30, 65, 100], base=1.0)
    assert got == pytest.approx([1, 1, 1, 0.5, 0], abs=1e-12)


def test_flat_cosine_resume_gives_the_same_lr():
    cfg = LRScheduleConfig(type="flat_cosine", flat_until=2, min_lr_ratio=0.1, warmup_iters=0)
    p = torch.nn.Parameter(torch.zeros(1))
    sched = LRSchedule(torch.optim.AdamW([p], lr=0.1), lr_factor_fn(cfg, 50, 10))
    sched.set_iter(37)
    sched2 = LRSchedule(torch.optim.AdamW([p], lr=0.1), lr_factor_fn(cfg, 50, 10))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert sched.get_last_lr()[0] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 17 / 30))))


@pytest.mark.parametrize("table, key", [
    ({"type": "flat_cosine"}, "lr_schedule.flat_until"),
    ({"type": "flat_cosine", "flat_until": 8, "decay_until": 8}, "lr_schedule.decay_until"),
    ({"type": "flat_cosine", "flat_until": 12}, "lr_schedule.flat_until"),
    ({"type": "flat_cosine", "flat_until": 4, "min_lr_ratio": 1.5}, "lr_schedule.min_lr_ratio"),
    ({"type": "flat_cosine", "flat_until": -1}, "lr_schedule.flat_until"),
])
def test_flat_cosine_bad_values_name_the_key(tmp_path, table, key):
    from detcore.errors import RunFileError
    from detcore.runfile import load_run

    lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in table.items())
    path = tmp_path / "run.toml"
    path.write_text(f"[train]\nmax_epochs = 12\n\n[lr_schedule]\n{lines}\n", encoding="utf-8")
    with pytest.raises(RunFileError) as err:
        load_run(path, data_splits=())
    assert key in str(err.value)
    assert str(path) in str(err.value) or path.name in str(err.value)


def test_flat_cosine_epoch_point_past_an_iteration_run_is_an_error():
    from detcore.errors import RunFileError

    # 5 epochs of 20 iterations: epoch 6 is past the end.
    with pytest.raises(RunFileError, match="lr_schedule.flat_until"):
        lr_factor_fn(LRScheduleConfig(type="flat_cosine", flat_until=6), max_iters=100, iters_per_epoch=20)
    with pytest.raises(RunFileError, match="lr_schedule.decay_until"):
        lr_factor_fn(LRScheduleConfig(type="flat_cosine", flat_until=2, decay_until=5), max_iters=100, iters_per_epoch=20)
    lr_factor_fn(LRScheduleConfig(type="flat_cosine", flat_until=2, decay_until=4), max_iters=100, iters_per_epoch=20)


def test_documented_flat_cosine_table_loads(tmp_path):
    """docs/training.md's flat_cosine [lr_schedule] table, as written, passes
    the run-file check in a 132-epoch run (DEIM's D-FINE-S length)."""
    from pathlib import Path

    from detcore.runfile import load_run

    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    block = doc.split('type = "flat_cosine"', 1)[0].rsplit("```toml\n", 1)[1] + 'type = "flat_cosine"'
    block += doc.split('type = "flat_cosine"', 1)[1].split("```", 1)[0]
    text = "\n".join(line.strip() for line in block.splitlines())
    path = tmp_path / "run.toml"
    model = (Path(__file__).resolve().parents[1] / "configs" / "models" / "retinanet_r50_fpn.toml").as_posix()
    path.write_text(f'extends = ["{model}"]\n\n[train]\nmax_epochs = 132\n\n' + text, encoding="utf-8")
    cfg = load_run(path, data_splits=()).cfg.lr_schedule
    assert (cfg.type, cfg.flat_until, cfg.decay_until, cfg.min_lr_ratio) == ("flat_cosine", 64, 120, 0.5)


@pytest.mark.slow
def test_flat_cosine_in_a_run_and_its_exact_resume(tmp_path):
    """The runner logs the flat_cosine LRs of the hand formula, and a run
    resumed from the middle of the decay logs the same LRs as the whole run."""
    from detcore.testing import DetcoreTester, tiny_run

    run = tiny_run(lr_schedule={"type": "flat_cosine", "flat_until": 2, "decay_until": 5, "min_lr_ratio": 0.1,
                                "warmup": "none"},
                   train={"max_iters": None, "max_epochs": 6, "log_interval": 1, "val_interval": 1000},
                   checkpoint={"interval": 3, "keep": 2})
    whole = DetcoreTester(tmp_path / "a").train(run)  # 4 images, batch 2: 2 iterations per epoch
    resumed = DetcoreTester(tmp_path / "b").train(run, resume=str(whole.work_dir / "epoch_3.pth"))

    def logged(result):  # the "iter" of a logged row counts steps done: its LR is iteration iter - 1's
        return {r["iter"] - 1: r["lr"] for r in result.scalars() if r.get("mode") == "train"}

    def hand(i):
        if i < 4:
            return 0.001
        if i < 10:
            return 0.001 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - 4) / 6)))
        return 0.0001

    lrs_whole = logged(whole)
    assert lrs_whole == pytest.approx({i: hand(i) for i in range(12)}, rel=1e-9)
    assert logged(resumed) == {i: lrs_whole[i] for i in range(6, 12)}
