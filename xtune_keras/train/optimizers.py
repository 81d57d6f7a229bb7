"""Optimizers: bert4keras Adam plus bert4keras's ``extend_with_*_v2`` extensions, under names that
reload from ``.h5``.

``build_optimizer`` composes, innermost first, only the extensions a run asks for:

====  ===============================================  =========================================
tag   bert4keras factory                               what for
====  ===============================================  =========================================
WD    ``extend_with_weight_decay_v2``                  AdamW: decoupled weight decay
LR    ``extend_with_piecewise_linear_lr_v2``           warmup, then linear decay to 0
PW    ``extend_with_parameter_wise_lr_v2``             LR multipliers by variable name
EMA   ``extend_with_exponential_moving_average_v2``    moving average of the weights
GA    ``extend_with_gradient_accumulation_v2``         one update per ``grad_accum_steps`` batches
====  ===============================================  =========================================

The order is chosen on purpose: PW wraps WD, so a multiplier scales the decay too (0 freezes);
EMA wraps PW, so it averages the weights as updated; GA is outermost, so on batches that only
accumulate it holds back every write of the extensions inside (Adam moments, weights, averages).

Each subset of tags has one class, ``XtuneAdam`` + ``_TAG`` per tag in the order above (e.g.
``XtuneAdam_WD_LR_PW``); all 32 are built and registered in ``keras.utils.get_custom_objects()``
when this module is imported, so ``import xtune_keras`` is enough to ``load_model`` any ``.h5``
saved with its optimizer. (tf-keras would resolve a bare ``Adam`` to its own legacy Adam, which
rejects bert4keras's ``bias_correction``: hence names of our own.)

Repairs of bert4keras 0.11.5 on the legacy (OptimizerV2) base, each where it is needed:

* Sparse gradients (``Embedding-Token``) reach ``_resource_apply_sparse``, which bert4keras's EMA
  overrides *and* forwards to the dense path, so the average of the embeddings moved twice per
  step. ``XtuneAdam`` sends sparse gradients to the dense path before any extension sees them.
* Gradient accumulation: bert4keras applies the batches it summed at the *first* batch of the
  next cycle (batch 0 makes an update with a zero gradient, the last cycle is never applied) and
  Adam's bias correction counts batches, not updates. Here the update happens on the k-th batch
  of each cycle with the mean gradient of those k batches, and Adam counts updates.
* EMA: the bias correction ``1 - momentum**t`` counts updates (not batches under GA), and a
  variable whose slot is created late (gradual unfreezing) starts its average as if it had been
  constant until then, which it was; bert4keras would divide its young average by the global t.

Lazy embeddings (``train.embedding_update: lazy``, ``lazy_embeddings=True``): a sparse gradient
(an embedding lookup's) updates only the rows it has, their moments included; rows a batch did not
use keep their weights and moments (TF Addons' LazyAdam, PyTorch's SparseAdam). Dense Adam, the
default (google-research/bert, bert4keras, PyTorch's AdamW on ``nn.Embedding``), still moves a row
whose moments are non-zero, and reads and writes the whole matrix every step. WD and PW act on
those rows the way their ``K.update`` hooks act on a dense write (``_rows_written``); EMA averages
every row; gradient accumulation sums dense gradients, so it does not combine with lazy rows.

Fused kernel (``train.adam_kernel: fused``, ``fused=True``): a dense gradient goes to TensorFlow's
``ResourceApplyAdam``, which updates both moments and the weight in one pass; the ops above make
about a dozen passes over every weight and both moments, all memory-bound (bench/RESULTS.md §9). The
same update up to float rounding: its epsilon is scaled so that its step equals bert4keras's
(``_fused_apply``). It writes without ``K.update``, so WD and PW give their change of the weight
write as numbers (``_decay_rate``, ``_lr_multiplier``), the same numbers the lazy rows use; gradient
accumulation holds back every write through ``K.update`` and so does not combine with it.
"""
import contextlib
import functools
import itertools
import math
import numbers

import tensorflow as tf
from bert4keras import optimizers as b4k_optimizers
from bert4keras.backend import K, keras

from xtune_keras.errors import XtuneError
from xtune_keras.registry import Registry

# google-research/bert's AdamW skips LayerNorm and bias. Our encoder norms are "...-Norm", the
# heads' LayerNormalization layers "...-norm"; bert4keras matches these as regexes (re.search).
NO_DECAY = ["Norm", "norm", "bias"]

TAGS = ("WD", "LR", "PW", "EMA", "GA")  # innermost first; also their order in class names
EMBEDDING_UPDATES = ("dense", "lazy")
ADAM_KERNELS = ("ops", "fused")


def summed_rows(values, indices):
    """``(rows, values)`` of a sparse gradient (an embedding lookup's) with each row once, repeats
    summed, rows ascending: the same rows in the same order for every gradient of one batch."""
    rows, position = tf.unique(tf.cast(indices, tf.int32))
    summed = tf.math.unsorted_segment_sum(values, position, tf.size(rows))
    order = tf.argsort(rows)
    return tf.gather(rows, order), tf.gather(summed, order)


@keras.utils.register_keras_serializable(package="xtune")
class XtuneAdam(b4k_optimizers.Adam):
    """bert4keras Adam (epsilon 1e-6 as in google-research/bert) with a reloadable name.

    The update is bert4keras's, written out so that Adam's step count ``t`` comes from
    ``_adam_step`` (gradient accumulation counts updates, not batches). Every write goes through
    ``K.update``: that is how bert4keras's extensions reach into it.
    """

    def __init__(self, learning_rate=0.001, name="XtuneAdam", lazy_embeddings=False, fused=False, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.lazy_embeddings = bool(lazy_embeddings)
        self.fused = bool(fused)

    def get_config(self):
        return dict(super().get_config(), lazy_embeddings=self.lazy_embeddings, fused=self.fused)

    def _adam_step(self):
        """Adam's ``t`` for the update being made: 1 for the first."""
        return self.iterations + 1

    def _moments(self, m, v, grad, dtype):
        beta_1, beta_2 = self._get_hyper("beta_1", dtype), self._get_hyper("beta_2", dtype)
        return beta_1 * m + (1.0 - beta_1) * grad, beta_2 * v + (1.0 - beta_2) * K.square(grad)

    def _step(self, m, v, dtype):
        """What Adam subtracts from the weights, given the moments just written."""
        if self.bias_correction:
            t = K.cast(self._adam_step(), dtype)
            m = m / (1.0 - K.pow(self._get_hyper("beta_1", dtype), t))
            v = v / (1.0 - K.pow(self._get_hyper("beta_2", dtype), t))
        return self._decayed_lr(dtype) * m / (K.sqrt(v) + self.epsilon)

    def _resource_apply_dense(self, grad, var):
        if self.fused:
            return self._fused_apply(grad, var)
        dtype = var.dtype.base_dtype
        m_slot, v_slot = self.get_slot(var, "m"), self.get_slot(var, "v")
        m, v = self._moments(m_slot, v_slot, grad, dtype)
        m, v = K.update(m_slot, m), K.update(v_slot, v)
        with tf.control_dependencies([m, v]):
            return K.update(var, var - self._step(m, v, dtype))

    def _resource_apply_sparse_duplicate_indices(self, grad, var, indices, **kwargs):
        if self.lazy_embeddings:
            rows, summed = summed_rows(grad, indices)
            return self._resource_apply_rows(summed, var, rows)
        # Densify before any extension sees it: bert4keras extensions that override the sparse
        # path also run through the dense one, so they would act twice (see module docstring).
        dense = tf.math.unsorted_segment_sum(grad, indices, tf.shape(var)[0])
        return self._resource_apply_dense(dense, var)

    def _resource_apply_rows(self, grad, var, rows):
        """Lazy Adam (TF Addons' LazyAdam, PyTorch's SparseAdam): the moments and weights of the
        embedding rows a batch used, nothing else. Dense Adam would read and write every row of the
        matrix (250k x 384 for e5) to move the few hundred a batch touches."""
        dtype = var.dtype.base_dtype
        m_slot, v_slot = self.get_slot(var, "m"), self.get_slot(var, "v")
        m, v = self._moments(tf.gather(m_slot, rows), tf.gather(v_slot, rows), grad, dtype)
        writes = [m_slot.scatter_update(tf.IndexedSlices(m, rows)), v_slot.scatter_update(tf.IndexedSlices(v, rows))]
        with tf.control_dependencies(writes):
            old = tf.gather(var, rows)
            new = self._rows_written(var, old, old - self._step(m, v, dtype))
            return var.scatter_update(tf.IndexedSlices(new, rows))

    def _fused_apply(self, grad, var):
        """Moments and weight in one ``ResourceApplyAdam``. Its step, lr * sqrt(1 - b2^t) / (1 - b1^t)
        * m / (sqrt(v) + eps'), is bert4keras's lr * m_hat / (sqrt(v_hat) + eps) when eps' = eps *
        sqrt(1 - b2^t) (powers 0 without bias correction). The extensions' decay comes first, as a
        write of its own: it reads the weight before the step, as theirs does."""
        dtype = var.dtype.base_dtype
        lr = self._decayed_lr(dtype) * self._lr_multiplier(var)
        rate = self._decay_rate(var)
        decayed = [var.assign_sub(lr * rate * var)] if rate else []
        beta_1, beta_2 = self._get_hyper("beta_1", dtype), self._get_hyper("beta_2", dtype)
        power_1 = power_2 = 0.0
        if self.bias_correction:
            t = K.cast(self._adam_step(), dtype)
            power_1, power_2 = K.pow(beta_1, t), K.pow(beta_2, t)
        with tf.control_dependencies(decayed):
            return tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=self.get_slot(var, "m").handle, v=self.get_slot(var, "v").handle,
                beta1_power=tf.cast(power_1, dtype), beta2_power=tf.cast(power_2, dtype), lr=lr, beta1=beta_1,
                beta2=beta_2, epsilon=self.epsilon * K.sqrt(1.0 - tf.cast(power_2, dtype)), grad=grad,
                use_locking=self._use_locking)

    def _rows_written(self, var, old, new):
        """``new``, the rows Adam computed, as the extensions write them (``old``: before): decay
        (WD) inside the LR multiplier (PW), as their ``K.update`` hooks nest."""
        if self._decay_rate(var):
            new = new - self._decayed_lr(var.dtype.base_dtype) * self._decay_rate(var) * old
        multiplier = self._lr_multiplier(var)
        return new if multiplier == 1 else old + (new - old) * multiplier

    def _decay_rate(self, var):
        """The decoupled weight decay of ``var`` (WD), 0 without it."""
        return 0.0

    def _lr_multiplier(self, var):
        """The LR multiplier of ``var`` (PW), 1 without it."""
        return 1.0


# train.optimizer: a base class and what the name means. adam: bert4keras Adam; adamw:
# google-research/bert's AdamW (optimization.py: decay 0.01, clip_by_global_norm 1.0, epsilon 1e-6,
# and no Adam bias correction). A new optimizer is one base class and one entry here.
OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adam", XtuneAdam, weight_decay=0.0, clip_norm=None, bias_correction=True)
OPTIMIZERS.register("adamw", XtuneAdam, weight_decay=0.01, clip_norm=1.0, bias_correction=False)


def _updates_done(optimizer):
    """How many updates the weights have had (batches, or cycles under accumulation)."""
    return int(K.get_value(optimizer.iterations)) // getattr(optimizer, "grad_accum_steps", 1)


def _has_slot(optimizer, var, slot_name):
    try:
        optimizer.get_slot(var, slot_name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def _writes_only_if(condition):
    """Within: every ``K.update(x, new)`` keeps ``x`` unless ``condition`` holds (the hook
    bert4keras's own extensions use to change the writes of the optimizer they wrap)."""
    update = K.update
    K.update = lambda x, new_x: update(x, tf.where(condition, new_x, x))
    try:
        yield
    finally:
        K.update = update


def _with_weight_decay(base, name):
    """bert4keras AdamW decay, also on the rows of a lazy update (only those rows decay, as in
    TF Addons' DecoupledWeightDecayExtension for sparse gradients) and in the fused kernel."""
    class RowWeightDecay(b4k_optimizers.extend_with_weight_decay_v2(base, name)):
        def _decay_rate(self, var):
            return self.weight_decay_rate if self._do_weight_decay(var) else 0.0

    return RowWeightDecay


def _with_parameter_wise_lr(base, name):
    """bert4keras LR multipliers by variable name, also on the rows of a lazy update and in the
    fused kernel."""
    class RowParameterWiseLR(b4k_optimizers.extend_with_parameter_wise_lr_v2(base, name)):
        def _lr_multiplier(self, var):
            return math.prod(f for key, f in self.paramwise_lr_schedule.items() if key in var.name)

    return RowParameterWiseLR


def _with_ema(base, name):
    """bert4keras EMA, with the bias correction and late slots repaired (module docstring)."""
    bert4keras_ema = b4k_optimizers.extend_with_exponential_moving_average_v2(base, name)

    class RepairedEMA(bert4keras_ema):
        def _create_slots(self, var_list):
            joining = [var for var in var_list if not _has_slot(self, var, "ema")]
            super()._create_slots(var_list)
            # A zero slot divided by 1 - momentum**t would shrink a variable that joins at t > 0;
            # var * (1 - momentum**t) is its average over the t updates it sat still.
            weight = 1.0 - self.ema_momentum ** _updates_done(self)
            if weight:
                for var in joining:
                    self.get_slot(var, "ema").assign(var * weight)

        def _resource_apply_rows(self, grad, var, rows):
            # The average moves on every row: an untouched row's average still approaches it.
            updated = super()._resource_apply_rows(grad, var, rows)
            average = self.get_slot(var, "ema")
            with tf.control_dependencies([updated]):
                return K.update(average, average * self.ema_momentum + var * (1.0 - self.ema_momentum))

        def apply_ema_weights(self, bias_correction=True):
            """Back up the trained weights, then set the (bias-corrected) averages."""
            if getattr(self, "_ema_applied", False):
                return
            self.old_weights = K.batch_get_value(self.model_weights)
            averages = K.batch_get_value(self.ema_weights)
            if bias_correction:
                scale = 1.0 - self.ema_momentum ** max(_updates_done(self), 1)
                averages = [average / scale for average in averages]
            K.batch_set_value(zip(self.model_weights, averages))
            self._ema_applied = True

        def reset_old_weights(self):
            """Put back the weights that ``apply_ema_weights`` backed up."""
            if getattr(self, "_ema_applied", False):
                super().reset_old_weights()
                self._ema_applied = False

    return RepairedEMA


def _with_accumulation(base, name):
    """bert4keras gradient accumulation, updating on the k-th batch of each cycle (docstring)."""
    bert4keras_ga = b4k_optimizers.extend_with_gradient_accumulation_v2(base, name)

    class RepairedAccumulation(bert4keras_ga):
        def _adam_step(self):
            return K.maximum((self.iterations + 1) // self.grad_accum_steps, 1)

        def _resource_apply_dense(self, grad, var):
            if self.fused:  # its writes bypass K.update, which holds them back here
                raise XtuneError("train.adam_kernel: fused does not combine with train.grad_accum_steps > 1")
            summed = self.get_slot(var, "ag") + grad
            update_now = K.equal((self.iterations + 1) % self.grad_accum_steps, 0)
            with _writes_only_if(update_now):
                # Past bert4keras's own body (which updates one batch late) to the optimizer inside.
                step = super(bert4keras_ga, self)._resource_apply_dense(
                    summed / self.grad_accum_steps, var)
            with tf.control_dependencies([step]):
                kept = tf.where(update_now, tf.zeros_like(summed), summed)
                return K.update(self.get_slot(var, "ag"), kept)

    return RepairedAccumulation


EXTENSIONS = {
    "WD": _with_weight_decay,
    "LR": b4k_optimizers.extend_with_piecewise_linear_lr_v2,
    "PW": _with_parameter_wise_lr,
    "EMA": _with_ema,
    "GA": _with_accumulation,
}


def class_name(tags, base=XtuneAdam):
    return "_".join((base.__name__,) + tuple(tags))


@functools.lru_cache(maxsize=None)
def optimizer_class(tags=(), base=XtuneAdam):
    """The class for a tuple of tags in ``TAGS`` order; each is its prefix's class + one extension."""
    if not tags:
        return base
    name = class_name(tags, base)
    cls = EXTENSIONS[tags[-1]](optimizer_class(tags[:-1], base), name)
    cls.__name__ = cls.__qualname__ = name
    keras.utils.get_custom_objects()[name] = cls  # the repaired class, where bert4keras registered its own
    return cls


def _register_all():
    for base in set(OPTIMIZERS.values()):
        for count in range(len(TAGS) + 1):
            for tags in itertools.combinations(TAGS, count):
                optimizer_class(tags, base)


_register_all()


# ---------------------------------------------------------------------------------------- building

def build_optimizer(name, learning_rate, weight_decay=None, clip_norm=None, warmup_steps=0,
                    total_steps=None, lr_multipliers=None, grad_accum_steps=1, ema_momentum=None,
                    embedding_update="dense", adam_kernel="ops"):
    """An optimizer for ``train.optimizer`` = ``adam`` | ``adamw``.

    * ``weight_decay``: decoupled decay rate (``None``: 0.01 for adamw, 0 for adam); never on
      norms or biases (``NO_DECAY``). It follows the LR schedule and multipliers.
    * ``clip_norm``: global gradient norm clip (``None``: 1.0 for adamw, none for adam; 0: none).
      Applied to each batch's gradient, before accumulation.
    * ``warmup_steps`` / ``total_steps``: LR x 0 -> 1 linearly over ``warmup_steps`` batches, then
      linearly to 0 at ``total_steps`` (or constant without it). Steps are batches
      (``optimizer.iterations``), accumulation or not: pass ``epochs * steps_per_epoch``.
    * ``lr_multipliers``: ``{substring of a variable name: factor}``; the factors of all matching
      substrings multiply; 0 freezes. See ``layer_lr_multipliers``.
    * ``grad_accum_steps``: one update per that many batches, on their mean gradient.
    * ``ema_momentum``: keep an EMA of the weights; see ``EMAWeights`` / ``apply_ema``.
    * ``embedding_update``: ``dense`` (Adam on every row) or ``lazy`` (on the rows a batch uses;
      module docstring).
    * ``adam_kernel``: ``ops`` (bert4keras's update, op by op) or ``fused`` (TensorFlow's one-pass
      kernel; module docstring).
    """
    base, defaults = OPTIMIZERS.get(name, "train.optimizer"), OPTIMIZERS.info(name)
    _require("train.lr", learning_rate, _is_number(learning_rate) and learning_rate > 0, "a number > 0")
    options = {"learning_rate": float(learning_rate), "bias_correction": defaults["bias_correction"]}
    clip_norm = defaults["clip_norm"] if clip_norm is None else clip_norm
    _require("train.clip_norm", clip_norm, clip_norm is None or _is_number(clip_norm) and clip_norm >= 0,
             "a number >= 0 (0: no clipping)")
    if clip_norm:
        options["global_clipnorm"] = float(clip_norm)
    options.update(_lazy(embedding_update, grad_accum_steps))
    options.update(_fused(adam_kernel, grad_accum_steps))
    tags = []
    for tag, extension_options in zip(TAGS, (  # one entry per tag, in TAGS order
            _decay(defaults["weight_decay"] if weight_decay is None else weight_decay),
            _schedule(warmup_steps, total_steps), _multipliers(lr_multipliers),
            _ema(ema_momentum), _accumulation(grad_accum_steps))):
        if extension_options:
            tags.append(tag)
            options.update(extension_options)
    return optimizer_class(tuple(tags), base)(**options)


def _decay(rate):
    _require("train.weight_decay", rate, _is_number(rate) and rate >= 0, "a number >= 0")
    return rate and {"weight_decay_rate": float(rate), "exclude_from_weight_decay": list(NO_DECAY)}


def _schedule(warmup_steps, total_steps):
    """bert4keras piecewise-linear points: {warmup: 1, total: 0} (from 0 at step 0)."""
    _require("train.warmup_steps", warmup_steps, _is_int(warmup_steps) and warmup_steps >= 0,
             "an integer >= 0")
    _require("train.total_steps", total_steps,
             total_steps is None or _is_int(total_steps) and total_steps > warmup_steps,
             "an integer > train.warmup_steps (%r)" % warmup_steps)
    points = {int(warmup_steps): 1.0} if warmup_steps else {}
    if total_steps is not None:
        if not warmup_steps:
            points[0] = 1.0  # no warmup: decay from the full LR
        points[int(total_steps)] = 0.0
    return points and {"lr_schedule": points}


def _multipliers(multipliers):
    multipliers = {} if multipliers is None else multipliers
    _require("train.lr_multipliers", multipliers, isinstance(multipliers, dict),
             "a mapping {substring of a variable name: factor}")
    for key, factor in multipliers.items():
        _require("train.lr_multipliers", key, isinstance(key, str) and key, "keys that are non-empty strings")
        _require("train.lr_multipliers[%r]" % key, factor, _is_number(factor) and factor >= 0,
                 "a number >= 0 (0 freezes)")
    kept = {key: float(factor) for key, factor in multipliers.items() if factor != 1}
    return kept and {"paramwise_lr_schedule": kept}


def _ema(momentum):
    _require("train.ema_momentum", momentum, momentum is None or _is_number(momentum) and 0 < momentum < 1,
             "null or a number in (0, 1), e.g. 0.999")
    return momentum is not None and {"ema_momentum": float(momentum)}


def _lazy(embedding_update, grad_accum_steps):
    on = _off_under_accumulation("train.embedding_update", embedding_update, EMBEDDING_UPDATES, grad_accum_steps,
                                 "the accumulated gradient is dense")
    return {"lazy_embeddings": True} if on else {}


def _fused(adam_kernel, grad_accum_steps):
    on = _off_under_accumulation("train.adam_kernel", adam_kernel, ADAM_KERNELS, grad_accum_steps,
                                 "accumulation holds back the writes of the op chain")
    return {"fused": True} if on else {}


def _off_under_accumulation(key, value, choices, grad_accum_steps, why):
    """Whether ``value`` is other than ``choices[0]``, the only choice gradient accumulation allows."""
    _require(key, value, value in choices, " or ".join(choices))
    _require(key, value, value == choices[0] or grad_accum_steps == 1,
             "%s with train.grad_accum_steps > 1 (%s)" % (choices[0], why))
    return value != choices[0]


def _accumulation(steps):
    _require("train.grad_accum_steps", steps, _is_int(steps) and steps >= 1, "an integer >= 1")
    return steps > 1 and {"grad_accum_steps": int(steps)}


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _require(key, value, ok, expected):
    if not ok:
        raise XtuneError("%s: must be %s (got %r)" % (key, expected, value))


# ---------------------------------------------------------------------------- layer-wise LR decay

def layer_lr_multipliers(num_layers, layer_decay=None, encoder_lr_ratio=1.0):
    """``lr_multipliers`` for layer-wise LR decay (Sun et al. 2019, "How to Fine-Tune BERT for
    Text Classification?", sec. 5.3): with layers numbered 1..L and the embeddings as layer 0,
    layer l learns at ``encoder_lr_ratio * layer_decay ** (L - l)`` of the LR; heads at 1.

    ``encoder_lr_ratio`` gives the encoder a lower LR than the heads (the write-up's
    ``[5e-5, 2e-4]``: LR 2e-4 for the heads, ratio 0.25 for BERT). Keys end in ``-`` so that
    ``Transformer-1-`` does not also match ``Transformer-10-``. ALBERT's one shared layer
    (``Transformer-MultiHeadSelfAttention``, ``Transformer-FeedForward``, no index; these never
    match a BERT name) serves every depth, so it gets the ratio without decay.
    """
    _require("encoder num_hidden_layers", num_layers, _is_int(num_layers) and num_layers >= 1,
             "an integer >= 1")
    xi = 1.0 if layer_decay is None else layer_decay
    _require("train.layer_decay", layer_decay, _is_number(xi) and 0 < xi <= 1, "null or a number in (0, 1]")
    ratio_ok = _is_number(encoder_lr_ratio) and encoder_lr_ratio >= 0
    _require("train.encoder_lr_ratio", encoder_lr_ratio, ratio_ok, "a number >= 0")
    multipliers = {"Embedding-": encoder_lr_ratio * xi ** num_layers}
    for i in range(num_layers):
        multipliers["Transformer-%d-" % i] = encoder_lr_ratio * xi ** (num_layers - 1 - i)
    for shared in ("Transformer-MultiHeadSelfAttention", "Transformer-FeedForward"):
        multipliers[shared] = float(encoder_lr_ratio)
    return multipliers


def check_lr_multipliers(model, multipliers, key="train.lr_multipliers"):
    """Raise if a substring of ``multipliers`` names no trainable variable of ``model`` (a typo
    would otherwise leave the LR unchanged without a word)."""
    names = [variable.name for variable in model.trainable_variables]
    for substring in multipliers or {}:
        if not any(substring in name for name in names):
            raise XtuneError("%s: %r matches no trainable variable; names look like %s"
                             % (key, substring, ", ".join(names[:3])))


# -------------------------------------------------------------------------------------------- EMA

def ema_optimizer(model):
    """The model's optimizer if it keeps an EMA of the weights, else ``None``."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    return optimizer if hasattr(optimizer, "apply_ema_weights") else None


def apply_ema(model):
    """Swap the model's trained weights for their moving averages (backed up in the optimizer).

    Returns whether it did: not without EMA, before the first update, or when already applied.
    """
    optimizer = ema_optimizer(model)
    if optimizer is None or not hasattr(optimizer, "model_weights") or not _updates_done(optimizer):
        return False
    if getattr(optimizer, "_ema_applied", False):
        return False
    optimizer.apply_ema_weights()
    return True


def restore_weights(model):
    """Undo ``apply_ema``: the trained weights are back, training continues from them."""
    optimizer = ema_optimizer(model)
    if optimizer is None or not getattr(optimizer, "_ema_applied", False):
        return False
    optimizer.reset_old_weights()
    return True


class EMAWeights(keras.callbacks.Callback):
    """Validate, checkpoint and finish on the EMA weights. Put it FIRST in the callback list.

    At each epoch end it swaps the averages in before the callbacks after it run (validation
    metrics, the ``.h5`` checkpoint, early stopping, loggers), so the saved file holds the weights
    that were validated. At the next epoch start it swaps the trained weights back, so training
    continues from them. After ``fit`` the model holds the averages. A no-op without EMA.
    """

    def on_epoch_begin(self, epoch, logs=None):
        restore_weights(self.model)

    def on_epoch_end(self, epoch, logs=None):
        apply_ema(self.model)
