"""detcore.engine.dist: launcher detection, Slurm/torchrun set-up, the
``--nproc`` launcher (taken port, a killed rank) and gather/share that
outlive the collective timeout. The training-level tests (parameters,
evaluation, resume, a failing rank, two jobs at once) are in
test_distributed_train.py.

The slow tests run real torch.distributed (gloo, 2 processes) through the
test-only ``dist-probe`` command in tests/dist_plugins.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from detcore.engine import dist, launch
from detcore.engine.dist_env import launcher_variable
from detcore.errors import DetcoreError
from detcore.testing import run_detcore, start_detcore

PLUGINS = Path(__file__).parent / "dist_plugins"


# run_detcore passes on no launcher variables of a job these tests may run
# in: a probe is launched only by what a test sets.
PROBE = ("-p", "detcore_dist_probe", "dist-probe")


def run_probe(out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_detcore(*PROBE, "--out", out, *args, plugin_paths=[PLUGINS], timeout=timeout)


def start_probe(out: Path, **launcher_env: str) -> subprocess.Popen:
    """A probe started as one rank of a job whose launcher set ``launcher_env``."""
    return start_detcore(*PROBE, "--out", out, plugin_paths=[PLUGINS], env=launcher_env)


def records(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def check_started_ranks(procs: list, out: Path, launcher: str, port: int) -> None:
    """Both started probes exit 0 and found each other through ``launcher`` on ``port``."""
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    recs = records(out)
    check_two_ranks(recs, launcher)
    assert recs[0]["master_port"] == str(port)


def check_two_ranks(recs: list[dict], launcher: str) -> None:
    assert [r["rank"] for r in recs] == [0, 1]
    assert all(
        r["world_size"] == 2 and r["launcher"] == launcher and r["backend"] == "gloo" for r in recs
    )
    # gather_to_main: rank 0 gets every rank's (uneven) payload in rank order, the others None.
    assert recs[0]["gathered"] == [[0], [1, 1]]
    assert recs[1]["gathered"] is None
    # share_from_main: rank 0's result everywhere.
    assert recs[0]["shared"] == recs[1]["shared"] == {"total": 3, "ranks": [0, 1]}
    assert recs[0]["after"] == recs[1]["after"] == [0, 1]
    # any_rank: one rank's flag reaches every rank.
    assert recs[0]["any"] == recs[1]["any"] == [True, False]


# --------------------------------------------------------------------------
# Fast unit tests
# --------------------------------------------------------------------------


def test_detect_launcher():
    assert dist.detect_launcher({}) == "none"
    assert dist.detect_launcher({"RANK": "0", "WORLD_SIZE": "2"}) == "torchrun"
    assert dist.detect_launcher({"TORCHELASTIC_RUN_ID": "x"}) == "torchrun"
    step = {"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "0"}
    assert dist.detect_launcher(step) == "slurm"
    # The sbatch script itself (no srun step) must not wait for other ranks.
    assert dist.detect_launcher({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) == "none"
    # One task: nothing to coordinate.
    assert dist.detect_launcher({**step, "SLURM_NTASKS": "1"}) == "none"
    # torchrun inside an allocation wins over Slurm's variables.
    assert dist.detect_launcher({**step, "RANK": "0", "WORLD_SIZE": "8"}) == "torchrun"


@pytest.mark.parametrize(
    "nodelist, first",
    [
        ("node1", "node1"),
        ("gpu[003-004,9],cpu1", "gpu003"),
        ("a1,b2", "a1"),
        ("rack[2-3]-n[07-08]", "rack2-n07"),
        ("x[5,7-9]", "x5"),
    ],
)
def test_slurm_first_host(nodelist, first):
    assert dist.slurm_first_host(nodelist) == first


def test_slurm_env():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "dgx[07-08]",
        "SLURM_JOB_ID": "123456",
        "SLURM_NTASKS_PER_NODE": "4(x2)",
    }
    out = dist.slurm_env(env)
    assert out["RANK"] == "5" and out["WORLD_SIZE"] == "8" and out["LOCAL_RANK"] == "1"
    assert out["LOCAL_WORLD_SIZE"] == "4"
    # No scontrol here: the node list is parsed.
    assert out["MASTER_ADDR"] == "dgx07"
    assert out["MASTER_PORT"] == str(dist.slurm_master_port("123456"))
    # Two jobs on one node get different ports; every task of a job the same one.
    assert dist.slurm_master_port("123456") != dist.slurm_master_port("123457")
    assert 10000 <= dist.slurm_master_port("123456") < 30000
    # Explicit settings win; the step's own task count wins over the job's.
    out = dist.slurm_env(
        {**env, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "4242", "SLURM_STEP_NUM_TASKS": "2"}
    )
    assert (out["MASTER_ADDR"], out["MASTER_PORT"], out["WORLD_SIZE"]) == ("10.0.0.1", "4242", "2")
    with pytest.raises(DetcoreError, match="srun"):
        dist.slurm_env({"SLURM_NTASKS": "2"})


def test_init_distributed_errors(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "OMPI_COMM_WORLD_RANK",
              "PMI_RANK"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(DetcoreError, match="torchrun --nproc-per-node"):
        dist.init_distributed("torchrun", "auto", "cpu")
    with pytest.raises(DetcoreError, match="unknown launcher"):
        dist.init_distributed("pmix", "auto", "cpu")
    with pytest.raises(DetcoreError, match="--launcher mpi, but neither Open MPI's .* start the job with mpirun"):
        dist.init_distributed("mpi", "auto", "cpu")
    info, device = dist.init_distributed("none", "auto", "cpu")
    assert (info.world_size, info.is_main, info.distributed, device.type) == (1, True, False, "cpu")
    # Single process: every helper is a pass-through.
    assert dist.gather_to_main("x") == ["x"]
    assert dist.share_from_main(3) == 3
    assert dist.all_gather_object(1) == [1]
    assert dist.any_rank(True) and not dist.any_rank(False)
    dist.barrier(timeout_s=5)


def test_strip_launch_args():
    argv = [
        "train",
        "r.toml",
        "--nproc",
        "2",
        "--launcher=none",
        "--seed",
        "3",
        "--nproc=4",
        "--launcher",
        "slurm",
    ]
    assert dist.strip_launch_args(argv) == ["train", "r.toml", "--seed", "3"]


def test_check_port_free_names_the_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(dist.PortInUseError) as exc:
            dist.check_port_free(port)
    msg = str(exc.value)
    assert "\n" not in msg and f"port {port}" in msg and "dist.port" in msg
    dist.check_port_free(port)  # released: free again


def test_port_taken_after_the_check_is_the_same_error(monkeypatch, tmp_path):
    """Another job binds dist.port between the check and the launcher's own
    bind: the launcher's store fails to listen, reported like the check."""
    monkeypatch.setattr(launch, "check_port_free", lambda port, host="": None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(dist.PortInUseError, match=f"port {port} "):
            dist.launch_local(
                2, ["dist-probe", "--out", str(tmp_path)], port=port, log_dir=str(tmp_path)
            )
    assert not list(tmp_path.glob("rank*.json"))


def test_distributed_sampler_shards_by_rank_with_grouping_and_wrappers():
    """The training sampler on 2 ranks, through a dataset wrapper with aspect
    ratios: ranks get the same number of batches, disjoint shards that
    cover the epoch (only the padding repeats), one orientation per batch,
    and another split next epoch."""
    from collections import Counter

    from detcore.data.samplers import TrainBatchSampler
    from detcore.data.synthetic import SyntheticDataset
    from detcore.data.wrappers import RepeatDataset

    data = RepeatDataset(
        SyntheticDataset(7, [32, 48], 3, vary_aspect=True, seed=0), times=2
    )  # 14 items
    ratios = data.aspect_ratios
    assert len(set(r >= 1 for r in ratios)) == 2

    def epoch(e):
        shards = []
        for rank in range(2):
            s = TrainBatchSampler(
                len(data), 3, seed=5, rank=rank, world_size=2, aspect_ratios=ratios
            )
            s.set_epoch(e)
            shards.append([[i.index for i in b] for b in s])
            assert len(shards[-1]) == len(s)
        return shards

    shards = epoch(0)
    assert len(shards[0]) == len(shards[1])
    seen = Counter(i for shard in shards for b in shard for i in b)
    assert set(seen) == set(range(len(data))) and sum(seen.values()) == len(
        data
    )  # 14 = 2 x 7: no padding
    for shard in shards:
        # All but the epoch's leftover batch hold one orientation.
        mixed = [b for b in shard if len({ratios[i] >= 1 for i in b}) > 1]
        assert len(mixed) <= 1
    assert {i for b in shards[0] for i in b}.isdisjoint({i for b in shards[1] for i in b})
    assert epoch(1) != shards and epoch(0) == shards


# --------------------------------------------------------------------------
# Real processes (gloo, 2 ranks)
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_slow_rank0_work_outlives_collective_timeout(tmp_path):
    """MMDetection #11096: rank 0 evaluates for longer than the collective
    timeout; the other ranks wait in share_from_main (eval timeout) and the
    job completes. The negative control shows the same wait on the default
    group does time out, so the test can fail."""
    out = tmp_path / "ok"
    port = dist.free_port()  # also: an explicit free port (dist.port) is used as given
    args = ("--timeout-s", "1", "--eval-timeout-s", "60", "--slow", "2.5", "--port", str(port))
    res = run_probe(out, "--nproc", "2", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = records(out)
    check_two_ranks(recs, "torchrun")
    assert recs[0]["master_port"] == str(port)
    assert recs[1]["waited_s"] > 1.5  # waited past the 1 s collective timeout

    res = run_probe(
        tmp_path / "plain", "--nproc", "2", "--timeout-s", "1", "--slow", "2.5", "--plain-share"
    )
    assert res.returncode != 0
    assert "Timed out" in res.stderr or "timed out" in res.stderr


@pytest.mark.slow
def test_killed_rank_ends_the_job(tmp_path):
    res = run_probe(tmp_path, "--nproc", "2", "--kill-rank", "0", timeout=90)
    assert res.returncode == 128 + 9
    assert "rank 0 of 2 failed with exit code -9: killed by SIGKILL" in res.stderr


@pytest.mark.slow
def test_taken_explicit_port_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run_probe(tmp_path, "--nproc", "2", "--port", str(port))
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [dist.port_in_use_message(port).join(["detcore: error: ", ""])]
    assert not list(tmp_path.glob("rank*.json"))


@pytest.mark.slow
def test_under_torchrun_with_the_detcore_script(tmp_path):
    """``torchrun --no-python detcore ...`` (``python -m detcore`` is what
    --nproc runs, tested above); the launcher is detected, and an uncaught
    exception is recorded for torchrun's failure report."""
    script = Path(sys.executable).with_name("detcore")
    if not script.exists():
        pytest.skip("the detcore console script is not installed next to this python")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    cmd = [*torchrun, "--no-python", str(script), *PROBE, "--out", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not launcher_variable(k)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(PLUGINS), env.get("PYTHONPATH", "")]))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    check_two_ranks(records(tmp_path), "torchrun")

    res = subprocess.run([*cmd, "--fail-rank", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    # Rank 1's exception is recorded in torchrun's failure report. Which
    # failure torchrun calls the root cause ("first observed") depends on when
    # it polls: rank 0 stops right after its peer, so either may be listed first.
    assert "rank      : 1" in res.stderr
    assert "RuntimeError: probe failure on rank 1" in res.stderr


@pytest.mark.slow
def test_under_slurm_environment(tmp_path):
    """What srun gives each task: no torchrun variables, Slurm's instead; the
    master address comes from the node list, the port from the job id."""
    port = dist.free_port()
    while not 10000 <= port < 30000:  # a port slurm_master_port can produce
        port = 10000 + port % 20000
        try:
            dist.check_port_free(port)
        except DetcoreError:
            port = dist.free_port()
    job_id = str(port - 10000 + 20000 * 7)
    assert dist.slurm_master_port(job_id) == port
    procs = []
    for rank in range(2):
        procs.append(start_probe(
            tmp_path,
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NTASKS="2",
            SLURM_STEP_ID="0",
            SLURM_JOB_ID=job_id,
            SLURM_JOB_NODELIST="localhost",
        ))
    check_started_ranks(procs, tmp_path, "slurm", port)


def test_mpi_env():
    ompi = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    mpich = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
    assert dist.detect_launcher(ompi) == dist.detect_launcher(mpich) == "mpi"
    assert dist.detect_launcher({**mpich, "PMI_SIZE": "1"}) == "none"
    assert dist.detect_launcher({**ompi, "RANK": "0", "WORLD_SIZE": "4"}) == "torchrun"
    # one node: rank 0 is on this host
    assert dist.mpi_env(mpich) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    # several nodes: MPI does not say where rank 0 is
    with pytest.raises(DetcoreError, match="export MASTER_ADDR=<host of rank 0>.*mpirun -x MASTER_ADDR"):
        dist.mpi_env(ompi)
    out = dist.mpi_env({**ompi, "MASTER_ADDR": "node7", "MASTER_PORT": "4242"})
    assert (out["RANK"], out["WORLD_SIZE"], out["LOCAL_RANK"], out["MASTER_ADDR"], out["MASTER_PORT"]) == (
        "3", "4", "1", "node7", "4242")
    with pytest.raises(DetcoreError, match="start the job with mpirun"):
        dist.mpi_env({})


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["openmpi", "mpich"])
def test_under_mpi_environment(tmp_path, flavour):
    """What Open MPI's / MPICH's mpirun gives each rank: no torchrun
    variables, MPI's instead; real processes on gloo."""
    port = dist.free_port()
    procs = []
    for rank in range(2):
        if flavour == "openmpi":
            mpi = {"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": "2",
                   "OMPI_COMM_WORLD_LOCAL_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
        else:
            mpi = {"PMI_RANK": str(rank), "PMI_SIZE": "2", "MPI_LOCALRANKID": str(rank), "MPI_LOCALNRANKS": "2"}
        procs.append(start_probe(tmp_path, MASTER_PORT=str(port), **mpi))
    check_started_ranks(procs, tmp_path, "mpi", port)
