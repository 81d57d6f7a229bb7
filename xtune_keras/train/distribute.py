"""One run on several devices: ``train.strategy: mirrored`` (tf.distribute MirroredStrategy).

Every device holds a replica of the model; each batch of ``train.batch_size`` examples (the
GLOBAL batch) is split across the replicas, their gradients are summed and one update is applied
to every copy. With a batch size divisible by the number of replicas the run computes the same
updates as on one device (up to float summation order); a smaller last batch is split unevenly
and Keras then weights its two halves equally, as it does for every Keras model. Dropout draws
its masks per replica, so runs with dropout are not bit for bit those of one device.

What was checked under MirroredStrategy (tests/test_strategy.py, and by hand on two logical
CPUs): the plain Keras ``train_step``; every bert4keras-based optimizer extension of
``optimizers.py`` (AdamW decay, global-norm clipping, warmup/decay, parameter-wise LR, EMA,
gradient accumulation: same weights as one device); FGM, PGD and R-Drop (AdversarialTrainer
scales its R-Drop KL and its logged losses by the number of replicas). FGM and PGD perturb each
replica's copy of the embeddings along the gradient of that replica's share of the batch (the
usual data-parallel FGM), so they are not bit for bit the one-device run either.
"""
import tensorflow as tf

from xtune_keras.errors import XtuneError


def build_strategy(name, devices=None, batch_size=None, echo=True):
    """The ``tf.distribute`` strategy of ``train.strategy``; ``None``: the default (no-op) one.

    ``devices``: names such as ``/gpu:0`` or ``GPU:1``; ``None``: every GPU, or every CPU when
    there is no GPU (TensorFlow shows one CPU unless it was split into logical devices)."""
    if name is None:
        return tf.distribute.get_strategy()
    available = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    chosen = [d.name for d in available] if devices is None else [_find_device(d) for d in devices]
    for name in chosen:
        if chosen.count(name) > 1:
            raise XtuneError("train.devices names %s twice (%s)" % (_short(name), ", ".join(devices)))
    strategy = _mirrored(tuple(chosen))
    if echo:
        replicas = strategy.num_replicas_in_sync
        share = " (%g examples per replica)" % (batch_size / replicas) if batch_size else ""
        print("train.strategy mirrored: %d replicas on %s; batch_size %s is the global batch%s"
              % (replicas, ", ".join(_short(d) for d in chosen), batch_size, share), flush=True)
    return strategy


_MIRRORED = {}


def _mirrored(devices):
    """One MirroredStrategy per device set and process. A second strategy object would number its
    collective operations from the same keys as the first, and a later run in the same process
    (a notebook, a test) fails with "Shape mismatch in the collective instance"."""
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
    return _MIRRORED[devices]


def _short(name):
    spec = tf.DeviceSpec.from_string(name)
    return "%s:%s" % (spec.device_type, spec.device_index)


def _find_device(name):
    """The full name of the logical device ``name`` (``/gpu:1``, ``GPU:1``, ...) stands for."""
    devices = tf.config.list_logical_devices()
    shown = ", ".join(_short(d.name) for d in devices)
    try:
        spec = tf.DeviceSpec.from_string(name)
    except ValueError:
        spec = None
    if spec is None or spec.device_type is None or spec.device_index is None:
        raise XtuneError("train.devices: %r is not a device name like /gpu:0; devices here: %s"
                         % (name, shown))
    for device in devices:
        found = tf.DeviceSpec.from_string(device.name)
        if (found.device_type, found.device_index) == (spec.device_type.upper(), spec.device_index):
            return device.name
    raise XtuneError("train.devices: no device %s on this machine; devices here: %s"
                     % (_short(name), shown))
