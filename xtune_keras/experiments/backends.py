"""The Ray backend of ``xtune ablate --backend ray``: every unfinished run is one Ray task.

Each task asks Ray for ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs and runs the same
command as the local backend, ``python -m xtune_keras.cli train BASE.yaml k=v ...``, in a process
of its own: memory is returned after every run, a run writes its folder exactly as it does
locally, and ``result.json`` (written last) still marks it finished, so a sweep killed half-way
resumes with the runs that are missing, whichever backend ran the others. The task gets the
driver's working directory and absolute Python executable explicitly (Ray workers do not
necessarily start in the driver's directory).

Without ``--address`` a local Ray instance is started with all the CPUs of this machine (and the
GPUs Ray finds) and shut down at the end. ``--address host:port`` (or ``ray://host:10001``, or
``auto``; without ``--address``, the ``RAY_ADDRESS`` environment variable if set) connects to a
running cluster and leaves it running; an address where no cluster answers is a one-line error
(in seconds when nothing listens there, after about 40 s when something else does). On a
cluster:

* every path must be visible under the same name from every node: the experiment and ablation
  files, the data, the checkpoint, ``output.runs_dir`` and the working directory (a shared
  filesystem); the runs are written by the nodes, and the table is computed from those files;
* xtune_keras (with TensorFlow and bert4keras) must be installed on every node at the driver's
  Python executable path.

Runs train at the same time, so the seeds of a variant, which locally take turns writing
``checkpoints/<name>.h5``, each write ``checkpoints/<name>-seed<k>.h5`` (see
``separate_h5_paths``); ``result.json`` names the file of its run. An ``encoder.pretrain`` that
several runs chain is run once, as a task of its own, before them (``shared_pretraining``). A run
that fails does not stop the others; when all have ended, the first failure is raised with its
variant, seed and the last line of its error output.
"""
import contextlib
import json
import os
import socket
import sys

from xtune_keras.errors import XtuneError

RAY_REQUIREMENT = 'pip install "ray==2.60.*"'
CONNECT_TIMEOUT_S = 5  # the TCP probe of --address, before Ray is asked to connect


def import_ray():
    try:
        import ray
    except ImportError:
        raise XtuneError('--backend ray needs Ray, which is not installed: %s' % RAY_REQUIREMENT)
    return ray


def run_on_ray(base, runs, todo, address=None, echo=True, cpus=1, gpus=0):
    """Train ``todo`` (``[(index, run), ...]``, the unfinished ``runs`` of ``planned_runs``, each
    ``(variant, seed, overrides, config)``) as Ray tasks of ``cpus`` CPUs and ``gpus`` GPUs each;
    raise the first failure at the end."""
    total = len(runs)
    if cpus <= 0 or gpus < 0:
        raise XtuneError("--cpus-per-run must be > 0 and --gpus-per-run >= 0 (got %g, %g)" % (cpus, gpus))
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        probe(address)  # a typo is reported even when there is nothing to train
    if not todo:
        if echo:
            print("ray: nothing to train, all %d runs finished" % total, flush=True)
        return
    ray = import_ray()
    started = connect(ray, address)
    try:
        check_resources(ray, cpus, gpus, local=started)
        failures = _run_tasks(ray, base, runs, todo, echo, cpus, gpus)
    finally:
        if started:
            ray.shutdown()
    if failures:
        (name, seed), message = failures[0]
        more = ""
        if len(failures) > 1:
            more = " (%d more failed: %s)" % (len(failures) - 1, ", ".join(
                "%s seed %d" % key for key, _ in failures[1:]))
        raise XtuneError("variant %s seed %d failed %s%s" % (name, seed, message, more))


def connect(ray, address):
    """``True`` if a local Ray instance was started here (ours to shut down), ``False`` if an
    existing one (an earlier ``ray.init`` of this process, or the cluster at ``address``) is used."""
    import logging

    if ray.is_initialized():
        return False
    if address in (None, "local"):
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
        return True
    probe(address)
    try:
        with _environ("RAY_gcs_server_port_wait_time_s", "1"):  # one attempt, not minutes of retries
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        raise XtuneError("--address %s: cannot connect to a Ray cluster there (%s)"
                         % (address, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__))
    return False


def probe(address):
    """Fail in seconds, with one line, when nothing listens at ``address`` (``ray.init`` would
    retry for minutes). ``auto`` is left to Ray, which finds no cluster at once."""
    if address in ("auto", "local"):
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise XtuneError("--address %s: expected host:port, ray://host:port or auto" % address)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise XtuneError("--address %s: no Ray cluster reachable there (%s)"
                         % (address, exc.strerror or exc.__class__.__name__))


@contextlib.contextmanager
def _environ(key, value):
    """``os.environ[key] = value`` within the block, unless the user has set it."""
    if key in os.environ:
        yield
        return
    os.environ[key] = value
    try:
        yield
    finally:
        os.environ.pop(key, None)


def check_resources(ray, cpus, gpus, local):
    """A task asking for more than Ray has would wait forever: refuse it on our local instance;
    on a cluster (which may add nodes) say so."""
    have = ray.cluster_resources()
    for flag, need, key in (("--cpus-per-run", cpus, "CPU"), ("--gpus-per-run", gpus, "GPU")):
        if need <= have.get(key, 0):
            continue
        if local:
            raise XtuneError("%s %g: this machine has %g %ss for Ray" % (flag, need, have.get(key, 0), key))
        print("xtune: warning: %s %g: the cluster has %g %ss now; the runs wait until it has more"
              % (flag, need, have.get(key, 0), key), file=sys.stderr, flush=True)


def separate_h5_paths(runs, cwd):
    """``{run index (1-based): .h5 path}`` for the runs whose .h5 another run would write too.

    Locally the runs train one after another and the seeds of a variant take turns on its
    ``checkpoints/<name>.h5`` (the last one stays). Running at the same time they would write the
    file together, and ``train.restore_best`` could load the other seed's weights. Each of them
    writes ``<stem>-seed<k>.h5`` instead (``<stem>-<variant>-seed<k>.h5`` when variants share
    an ``output.h5``). Decided over all the planned runs, finished or not, so that a resumed sweep
    names its files alike. ``output`` is outside the config hash: the run folders do not change."""
    from xtune_keras.schema import h5_path as h5_path_of

    groups = {}
    for index, (name, seed, _, config) in enumerate(runs, 1):
        groups.setdefault(os.path.normpath(os.path.join(cwd, h5_path_of(config))), []).append(
            (index, name, seed, h5_path_of(config)))
    own = {}
    for runs in groups.values():
        if len(runs) < 2:
            continue
        one_variant = len({name for _, name, _, _ in runs}) == 1
        for index, name, seed, path in runs:
            stem, ext = os.path.splitext(path)
            own[index] = "%s%s-seed%d%s" % (stem, "" if one_variant else "-" + name, seed, ext or ".h5")
    return own


def train_command(base, overrides):
    return [os.path.abspath(sys.executable), "-m", "xtune_keras.cli", "train", base] + list(overrides)


def pretrain_command(path):
    return [os.path.abspath(sys.executable), "-m", "xtune_keras.cli", "pretrain", path, "--quiet"]


def shared_pretraining(todo):
    """The distinct ``encoder.pretrain`` files of the runs to train, in run order.
    A fine-tuning run first runs its ``encoder.pretrain`` when that has not finished
    (``FineTune.pretrained``); runs side by side (the seeds of a row) would each run it, into the
    same run folder. Here each runs once, as a task of its own, and those runs wait for it."""
    paths = (config["encoder"].get("pretrain") for _, (_, _, _, config) in todo)
    return list(dict.fromkeys(path for path in paths if path))


def _run_tasks(ray, base, runs, todo, echo, cpus, gpus):
    """Submit every run, echo each as it ends; ``[((variant, seed), message), ...]`` of failures
    in run order. On an interrupt the tasks still running are cancelled (their runs killed)."""
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_task_function())
    cwd = os.getcwd()
    own_h5 = separate_h5_paths(runs, cwd)
    total = len(runs)
    if echo and own_h5:
        print("ray: runs that would write the same .h5 at the same time write their own instead, "
              "e.g. %s" % own_h5[min(own_h5)], flush=True)
    first = {path: remote.remote(pretrain_command(path), cwd, tf_threads(cpus))
             for path in shared_pretraining(todo)}
    if echo and first:
        print("ray: %d pretraining(s) first, once for the runs that chain each: %s"
              % (len(first), ", ".join(first)), flush=True)
    pending = {}
    for index, (name, seed, overrides, config) in todo:
        extra = ["output.h5=%s" % json.dumps(own_h5[index])] if index in own_h5 else []
        after = [first[config["encoder"]["pretrain"]]] if config["encoder"].get("pretrain") else []
        pending[remote.remote(train_command(base, list(overrides) + extra), cwd, tf_threads(cpus), *after)] = (
            index, name, seed)
    if echo:
        print("ray: %d of %d runs to train, %g CPU and %g GPU each" % (len(todo), total, cpus, gpus), flush=True)
    done, failures = total - len(todo), []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index, name, seed = pending.pop(ready[0])
            try:
                code, last = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # the task itself died (node lost, OOM kill)
                code, last = None, (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            done += 1
            if code == 0:
                status = "done"
            else:
                where = "(exit %d)" % code if code is not None else "(Ray task failed)"
                failures.append((index, (name, seed), "%s: %s" % (where, last)))
                status = "FAILED %s: %s" % (where, last)
            if echo:
                print("[%d/%d] %s seed %d %s" % (done, total, name, seed, status), flush=True)
    except BaseException:
        for ref in list(pending) + list(first.values()):
            ray.cancel(ref, force=True)
        raise
    return [(key, message) for _, key, message in sorted(failures)]


def tf_threads(cpus):
    """TensorFlow's intra- and inter-op pool sizes for a run given ``cpus`` CPUs: its share, not
    the whole machine (runs side by side would otherwise each start a pool per core and contend)."""
    return max(1, int(cpus))


def _task_function():
    """The task body, built here so that Ray ships it by value: a Ray worker then imports only
    the standard library, not xtune_keras (whose import loads TensorFlow)."""

    def train_run(command, cwd, threads, *after):
        """``after``: what the tasks this run waited for returned (Ray passes their results)."""
        import os as _os
        import subprocess
        import sys as _sys

        for code, last in after:
            if code != 0:
                return code, "its encoder.pretrain failed: %s" % last

        env = dict(_os.environ)
        for key in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):  # read by TensorFlow at start
            env.setdefault(key, str(threads))

        def die_with_parent():  # Linux: the run is killed when its Ray worker is
            try:
                import ctypes
                import signal

                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            except Exception:
                pass

        try:
            done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, preexec_fn=die_with_parent if _sys.platform == "linux" else None)
        except OSError as exc:  # no such Python or working directory on this node
            return 127, "cannot start %s in %s: %s" % (command[0], cwd, exc)
        return done.returncode, (done.stderr.strip().splitlines() or ["(no output)"])[-1]

    return train_run
