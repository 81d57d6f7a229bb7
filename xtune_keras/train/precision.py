"""``train.precision``: Keras mixed-precision policies for the encoder and heads.

Under ``mixed_bfloat16`` every layer computes in bfloat16 and keeps float32 variables; the
``logits`` layer stays float32 (model/classifier.py), so losses, metrics and saved ``.h5`` weights
are float32 and a file trained in mixed precision loads and predicts under float32
(``modelfile.load_model_file``). bert4keras 0.11.5 masks attention with ``-inf`` through
``K.where``, which both half types hold. bfloat16 keeps float32's exponent range: no loss scaling.
``mixed_float16`` is the same in float16, for GPUs (CPUs emulate float16); its small range needs
dynamic loss scaling (train/loss_scale.py, done by the trainer). ``auto`` takes bfloat16
only where the CPU multiplies it in hardware (Intel AMX: ``amx_bf16`` in /proc/cpuinfo); without
it, TensorFlow emulates bfloat16 and a step is slower than float32 (bench/RESULTS.md).
"""
import contextlib

from xtune_keras.cpu import cpu_flags


def resolve_precision(precision, flags=None):
    """``(policy name, why)``; ``auto`` decides by the CPU's flags (``flags``: for tests)."""
    if precision != "auto":
        return precision, "train.precision: %s" % precision
    flags = cpu_flags() if flags is None else set(flags)
    if "amx_bf16" in flags:
        return "mixed_bfloat16", "train.precision auto: mixed_bfloat16 (the CPU has AMX bfloat16 units)"
    return "float32", "train.precision auto: float32 (no AMX on this CPU: bfloat16 would be emulated, slower)"


@contextlib.contextmanager
def precision_policy(policy):
    """Layers built inside take ``policy``; the global policy is restored after (layers keep theirs)."""
    from bert4keras.backend import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
