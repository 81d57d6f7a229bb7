"""The run folder: the one object that knows its layout.

``runs/<name>/seed<seed>-<config hash>/`` holds::

    config.yaml     the validated config of the run (every default filled in)
    labels.json     the label vocabulary, in output order
    metrics.jsonl   one JSON line per finished epoch (appended and flushed as the epoch ends)
    resume/         the state after the last finished epoch, while the run is unfinished
    tensorboard/    Keras's TensorBoard logs and the HParams session
    result.json     written last: its presence means the run finished

Sweeps, reports, plots and the Ray backend read runs through this class, so tables are always
computed from what is on disk and an interrupted sweep resumes. No TensorFlow here.
"""
import glob
import json
import os
import shutil

from xtune_keras.schema import config_hash, dump_config


class RunDir:
    CONFIG = "config.yaml"
    LABELS = "labels.json"
    METRICS = "metrics.jsonl"
    RESULT = "result.json"
    RESUME = "resume"
    RESUME_STATE = "state.json"  # in resume/: the epoch and callback state (train/resume.py writes it)
    TENSORBOARD = "tensorboard"

    def __init__(self, path):
        self.path = path

    @classmethod
    def of(cls, config):
        """The run folder of a validated config (its name, seed and hash)."""
        return cls(os.path.join(config["output"]["runs_dir"], config["name"],
                                "seed%d-%s" % (config["seed"], config_hash(config))))

    @classmethod
    def finished_under(cls, runs_dir):
        """Every finished run folder below ``runs_dir``, in path order."""
        pattern = os.path.join(runs_dir, "*", "*", cls.RESULT)
        return [cls(os.path.dirname(path)) for path in sorted(glob.glob(pattern))]

    def __repr__(self):
        return "RunDir(%r)" % self.path

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def tensorboard_dir(self):
        return self.file(self.TENSORBOARD)

    @property
    def resume_dir(self):
        return self.file(self.RESUME)

    @property
    def metrics_path(self):
        return self.file(self.METRICS)

    def resume_state(self):
        """The ``resume/state.json`` of an unfinished run, or None (none yet, or the run finished
        and removed its resume folder meanwhile)."""
        try:
            with open(os.path.join(self.resume_dir, self.RESUME_STATE), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def finished(self):
        return os.path.isfile(self.file(self.RESULT))

    def result(self):
        """The run's ``result.json`` with ``run_dir`` set to where the folder lies now (it may
        have moved since, or `xtune report` runs from elsewhere); None while unfinished."""
        if not self.finished():
            return None
        with open(self.file(self.RESULT), encoding="utf-8") as f:
            result = json.load(f)
        result["run_dir"] = self.path
        return result

    def epochs(self):
        """The rows of ``metrics.jsonl``; ``[]`` when there is none (a run killed before its
        first epoch ended, or a folder moved since)."""
        if not os.path.isfile(self.metrics_path):
            return []
        with open(self.metrics_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def start(self, config, labels=None, resume=False):
        """Ready the folder for training. Without ``resume`` an unfinished earlier attempt is
        cleared; with it, epochs beyond the saved resume state are dropped (see ``keep_epochs``)."""
        os.makedirs(self.path, exist_ok=True)
        if not resume:
            for name in (self.METRICS, self.RESULT):
                if os.path.exists(self.file(name)):
                    os.remove(self.file(name))
            shutil.rmtree(self.resume_dir, ignore_errors=True)
        dump_config(config, self.file(self.CONFIG))
        if labels is not None:  # a pretraining run has none
            labels.save(self.file(self.LABELS))

    def keep_epochs(self, count):
        """Keep the first ``count`` lines of ``metrics.jsonl``: an epoch that was logged but whose
        resume state was not written (killed in between) is trained again and logged again."""
        rows = self.epochs()[:count]
        self._write_text(self.METRICS, "".join(json.dumps(row) + "\n" for row in rows))

    def write_result(self, result):
        """``result.json``, atomically, then the resume state goes: the run is finished."""
        self._write_text(self.RESULT, json.dumps(result, indent=2, ensure_ascii=False))
        shutil.rmtree(self.resume_dir, ignore_errors=True)

    def _write_text(self, name, text):
        path = self.file(name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
