"""The export folders (SavedModel, ONNX): what marks each as xtune's, and writing one so that it
appears complete or not at all, replacing an earlier export but never another folder."""
import contextlib
import os
import shutil
import tempfile

from xtune_keras.errors import XtuneError

EXTRA_DIR = "assets.extra"
META_FILE = "xtune_meta.json"
ONNX_MODEL_FILE = "model.onnx"
ONNX_VOCAB_FILE = "vocab.json"


def is_saved_model_export(directory):
    return os.path.isfile(os.path.join(directory, EXTRA_DIR, META_FILE))


def is_onnx_export(directory):
    return all(os.path.isfile(os.path.join(directory, name))
               for name in (ONNX_MODEL_FILE, META_FILE, ONNX_VOCAB_FILE))


def check_replaceable(out_dir):
    """Refuse a file, or a non-empty folder that is not an earlier export (of either format)."""
    if os.path.isfile(out_dir):
        raise XtuneError("%s: is a file; give a folder for the export" % out_dir)
    if (os.path.isdir(out_dir) and os.listdir(out_dir)
            and not (is_saved_model_export(out_dir) or is_onnx_export(out_dir))):
        raise XtuneError("%s: folder exists and is not an xtune export; not overwritten" % out_dir)


@contextlib.contextmanager
def staged_folder(out_dir):
    """Yields an empty folder beside ``out_dir``; when the block ends without an error it becomes
    ``out_dir`` (an earlier export is moved aside first, then deleted), otherwise it is deleted."""
    target = os.path.abspath(out_dir)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".%s.tmp." % os.path.basename(target), dir=parent)
    try:
        folder = os.path.join(staging, "model")
        yield folder
        if os.path.isdir(target):
            os.rename(target, os.path.join(staging, "old"))
        os.rename(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
