"""``xtune ablate --backend ray``: the runs as Ray tasks on a local Ray instance."""
import os
import sys
import time

import pytest

from tests.test_sweep import VARIANTS, write_ablation
from xtune_keras.errors import XtuneError
from xtune_keras.experiments.report import collect_results
from xtune_keras.experiments.sweep import run_sweep

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def sweeps(tiny_ckpt, tmp_path_factory):
    """The ablation of test_sweep.py (3 variants x 2 seeds, 1 epoch) on each backend, apart."""
    out = {}
    previous = os.getcwd()
    try:
        for backend in ("local", "ray"):
            tmp = tmp_path_factory.mktemp("sweep_" + backend)
            os.chdir(tmp)  # the default .h5 path (checkpoints/<name>.h5) is relative to the working dir
            path = write_ablation(tmp, tiny_ckpt, VARIANTS)
            start = time.time()
            rows, tables = run_sweep(path, echo=False, backend=backend)
            out[backend] = {"tmp": tmp, "path": path, "rows": rows, "tables": tables,
                            "seconds": time.time() - start}
    finally:
        os.chdir(previous)
    assert not ray.is_initialized()  # the instance we started is shut down
    return out


def by_run(tmp):
    return {(r["name"], r["seed"]): r for r in collect_results(str(tmp / "runs"))}


def test_ray_gives_the_table_of_the_local_backend(sweeps):
    local, remote = sweeps["local"], sweeps["ray"]
    assert [r["variant"] for r in remote["rows"]] == ["row0_baseline", "row1_lr", "row2_avg_pooling"]
    for mine, theirs in zip(remote["rows"], local["rows"]):
        assert mine["runs"] == 2 and mine["seeds"] == "0 1"
        assert mine["val_acc_mean"] == pytest.approx(theirs["val_acc_mean"], abs=1e-9)
    assert remote["rows"] == local["rows"]  # deterministic on the tiny checkpoint: every value
    runs_local, runs_ray = by_run(local["tmp"]), by_run(remote["tmp"])
    assert sorted(runs_ray) == sorted(runs_local) and len(runs_ray) == 6
    for key, result in runs_ray.items():
        assert result["epochs_run"] == 1
        assert result["best"]["val_loss"] == pytest.approx(runs_local[key]["best"]["val_loss"], abs=1e-6)
        # each task ran in the driver's working directory: the default .h5 landed there, and the
        # seeds of a variant, trained at the same time, wrote files of their own
        assert result["h5"] == os.path.join("checkpoints", "%s-seed%d.h5" % key)
        assert os.path.isfile(os.path.join(str(remote["tmp"]), result["h5"]))


def test_rerun_skips_finished_runs_then_resumes_a_missing_one(sweeps, capsys):
    remote = sweeps["ray"]
    previous = os.getcwd()
    os.chdir(remote["tmp"])
    try:
        stamps = {k: os.path.getmtime(os.path.join(r["run_dir"], "result.json"))
                  for k, r in by_run(remote["tmp"]).items()}
        start = time.time()
        rows, _ = run_sweep(remote["path"], backend="ray")
        assert time.time() - start < 20  # no Ray instance, no TensorFlow process
        assert "ray: nothing to train, all 6 runs finished" in capsys.readouterr().out
        assert rows == remote["rows"]
        assert stamps == {k: os.path.getmtime(os.path.join(r["run_dir"], "result.json"))
                          for k, r in by_run(remote["tmp"]).items()}
        with pytest.raises(XtuneError, match="no Ray cluster reachable"):  # checked all the same
            run_sweep(remote["path"], backend="ray", address="127.0.0.1:1")

        victim = by_run(remote["tmp"])[("row1_lr", 1)]
        os.remove(os.path.join(victim["run_dir"], "result.json"))  # as if killed before finishing
        rows, _ = run_sweep(remote["path"], backend="ray")
        out = capsys.readouterr().out
    finally:
        os.chdir(previous)
    assert "ray: 1 of 6 runs to train, 1 CPU and 0 GPU each" in out
    assert "[6/6] row1_lr seed 1 done" in out
    assert rows == remote["rows"]
    # alone this time, it still writes the .h5 of its own name, as in the first sweep
    assert by_run(remote["tmp"])[("row1_lr", 1)]["h5"] == os.path.join("checkpoints", "row1_lr-seed1.h5")
    assert not ray.is_initialized()


def test_runs_that_would_share_an_h5_get_their_own():
    from xtune_keras.experiments.backends import separate_h5_paths

    def run(name, seed, h5=None):
        return name, seed, [], {"name": name, "output": {"h5": h5}}

    runs = [run("a", 0), run("a", 1), run("b", 0, "m.h5"), run("c", 0, "./m.h5"), run("d", 0)]
    assert separate_h5_paths(runs, "/work") == {
        1: os.path.join("checkpoints", "a-seed0.h5"), 2: os.path.join("checkpoints", "a-seed1.h5"),
        3: "m-b-seed0.h5", 4: "./m-c-seed0.h5"}


def test_failed_run_names_its_variant_after_the_others_finish(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # valid YAML, but the tiny encoder has 2 layers: the run fails inside its process
    variants = [{"name": "row0_baseline"}, {"name": "row1_bad_layer", "overrides": {"encoder.output_layer": 5}}]
    path = write_ablation(tmp_path, tiny_ckpt, variants, seeds=(0,))
    with pytest.raises(XtuneError) as info:
        run_sweep(path, echo=False, backend="ray")
    message = str(info.value)
    assert message.startswith("variant row1_bad_layer seed 0 failed (exit 2): xtune: error: ")
    assert "encoder.output_layer: 5 is outside the 2 layers" in message and "\n" not in message
    assert [r["name"] for r in collect_results(str(tmp_path / "runs"))] == ["row0_baseline"]
    assert not ray.is_initialized()


@pytest.mark.parametrize("address, fragment", [
    ("127.0.0.1:1", "--address 127.0.0.1:1: no Ray cluster reachable there"),
    ("ray://127.0.0.1:1", "--address ray://127.0.0.1:1: no Ray cluster reachable there"),
    ("nonsense", "--address nonsense: expected host:port, ray://host:port or auto"),
])
def test_unreachable_address_is_one_line_and_fast(tiny_ckpt, tmp_path, monkeypatch, address, fragment):
    monkeypatch.chdir(tmp_path)
    path = write_ablation(tmp_path, tiny_ckpt, VARIANTS, seeds=(0,))
    start = time.time()
    with pytest.raises(XtuneError) as info:
        run_sweep(path, echo=False, backend="ray", address=address)
    assert time.time() - start < 15
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert not ray.is_initialized() and not os.path.exists(tmp_path / "runs")


def test_more_gpus_than_the_machine_has_is_refused(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_ablation(tmp_path, tiny_ckpt, VARIANTS, seeds=(0,))
    gpus = 64  # more than any test machine
    with pytest.raises(XtuneError, match="--gpus-per-run 64: this machine has .* GPUs for Ray"):
        run_sweep(path, echo=False, backend="ray", gpus=gpus)
    assert not ray.is_initialized() and not os.path.exists(tmp_path / "runs")


def test_missing_ray_says_how_to_install(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    path = write_ablation(tmp_path, tiny_ckpt, VARIANTS, seeds=(0,))
    needs_ray = r'--backend ray needs Ray, which is not installed: pip install "ray==2\.60\.\*"'
    with pytest.raises(XtuneError, match=needs_ray):
        run_sweep(path, echo=False, backend="ray")


def test_cli_passes_backend_options_to_the_sweep(monkeypatch, tmp_path):
    import xtune_keras.experiments.sweep
    from xtune_keras.cli import build_parser, run_command

    seen = {}

    def fake_run_sweep(path, **kwargs):
        seen.update(kwargs, path=path)
        raise XtuneError("stop here")

    monkeypatch.setattr(xtune_keras.experiments.sweep, "run_sweep", fake_run_sweep)
    args = build_parser().parse_args(["ablate", "a.yaml", "train.lr=1e-4", "--backend", "ray", "--address",
                                      "10.0.0.1:6379", "--cpus-per-run", "2", "--gpus-per-run", "0.5"])
    assert run_command(args) == 2
    assert seen == {"path": "a.yaml", "seeds": None, "extra_overrides": ["train.lr=1e-4"], "backend": "ray",
                    "address": "10.0.0.1:6379", "cpus": 2.0, "gpus": 0.5}
    defaults = build_parser().parse_args(["ablate", "a.yaml"])
    assert (defaults.backend, defaults.address, defaults.cpus_per_run, defaults.gpus_per_run) == ("local", None, 1, 0)


def test_a_run_gets_tensorflow_threads_for_its_share_of_the_cpus():
    from xtune_keras.experiments.backends import tf_threads

    assert [tf_threads(c) for c in (0.5, 1, 1.5, 2, 4)] == [1, 1, 1, 2, 4]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/maps")
def test_ray_task_runs_in_the_driver_directory_without_loading_tensorflow(tmp_path, monkeypatch):
    """The task body is shipped by value: the Ray worker running it loads no xtune_keras, hence no
    TensorFlow (the run's own process does); the command runs in the directory it is given."""
    from xtune_keras.experiments.backends import _task_function

    script = ("import os, sys; maps = open('/proc/%d/maps' % os.getppid()).read(); "
              "print(os.getcwd(), 'tensorflow' in maps, file=sys.stderr)")
    for key in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(key, raising=False)  # the workers inherit the driver's environment
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        train_run = ray.remote(num_cpus=1)(_task_function())
        code, last = ray.get(train_run.remote([sys.executable, "-c", script], str(tmp_path), 1))
        assert (code, last) == (0, "%s False" % tmp_path)
        code, last = ray.get(train_run.remote([sys.executable, "-c", "import sys; sys.exit(3)"], str(tmp_path), 1))
        assert (code, last) == (3, "(no output)")
        threads = "import os, sys; print(os.environ['TF_NUM_INTRAOP_THREADS'], os.environ['TF_NUM_INTEROP_THREADS'], " \
                  "file=sys.stderr)"
        assert ray.get(train_run.remote([sys.executable, "-c", threads], str(tmp_path), 2)) == (0, "2 2")
    finally:
        ray.shutdown()


def test_a_pretraining_that_runs_share_runs_once_before_them(tiny_ckpt, tmp_path, monkeypatch, capsys):
    """Both seeds of a row chain the same encoder.pretrain: one task runs it, then they fine-tune."""
    from tests.test_pretrain import write_pretrain
    from xtune_keras.rundir import RunDir
    from xtune_keras.schema import load_config

    monkeypatch.chdir(tmp_path)
    pretrain = write_pretrain(tmp_path, tiny_ckpt, name="tapt_shared", train={"epochs": 1})
    variants = [{"name": "row0_baseline"}, {"name": "row1_tapt", "overrides": {"encoder.pretrain": pretrain}}]
    rows, _ = run_sweep(write_ablation(tmp_path, tiny_ckpt, variants), backend="ray")
    assert "ray: 1 pretraining(s) first, once for the runs that chain each: %s" % pretrain in capsys.readouterr().out
    assert [row["runs"] for row in rows] == [2, 2]
    steps = [row["step"] for row in RunDir.of(load_config(pretrain, recipe="pretrain")).epochs()]
    assert steps and steps == sorted(set(steps))  # one writer: each evaluation logged once
