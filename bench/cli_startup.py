"""How fast the command line answers: ``xtune --help`` and ``import xtune_keras`` against the peer
that used to be on that path, ``import tensorflow`` (what ``import xtune_keras`` loaded before the
redesign). Each command runs in a fresh process, ``--rounds`` times interleaved; medians.

    .venv/bin/python bench/cli_startup.py --rounds 7
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from xtune_keras.cpu import machine_description


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    xtune = shutil.which("xtune") or os.path.join(os.path.dirname(sys.executable), "xtune")
    commands = {
        "xtune --help": [xtune, "--help"],
        "python -c 'import xtune_keras'": [sys.executable, "-c", "import xtune_keras"],
        "python -c 'import tensorflow' (peer)": [sys.executable, "-c", "import tensorflow"],
    }
    times = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    print("CPU: %s" % machine_description())
    peer = statistics.median(times["python -c 'import tensorflow' (peer)"])
    for name, values in times.items():
        median = statistics.median(values)
        print("%-40s median %.3f s  min %.3f s  (%.2fx the peer)" % (name, median, min(values), median / peer))


if __name__ == "__main__":
    main()
