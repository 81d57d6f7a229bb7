"""Dynamic loss scaling for ``train.precision: mixed_float16``.

float16 gradients below about 6e-8 flush to zero. Micikevicius et al. 2018 ("Mixed Precision
Training") multiply the loss by a large factor before differentiating and divide the gradients
by it after; a step whose gradients overflow (inf/NaN) is skipped and the factor halved, and the
factor doubles after ``growth_interval`` finite steps in a row. Keras's ``LossScaleOptimizer`` does
this by wrapping the optimizer, which hides the attributes our optimizer extensions and callbacks
read (EMA, gradient accumulation); here the trainer scales (``adversarial.AdversarialTrainer``) and
this object decides whether the wrapped optimizer applies. Defaults as Keras's: 2**15, 2000, 2.
"""
import tensorflow as tf


def scale_gradient(g, factor):
    """``g * factor`` for a dense gradient or an embedding's ``IndexedSlices``."""
    if g is None:
        return None
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * tf.cast(factor, g.values.dtype), g.indices, g.dense_shape)
    return g * tf.cast(factor, g.dtype)


def all_finite(grads):
    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values])


class DynamicLossScale(tf.Module):
    """The factor (``scale``) and the count of finite steps since it last changed."""

    def __init__(self, initial_scale=2.0 ** 15, growth_interval=2000, factor=2.0):
        super().__init__(name="loss_scale")
        self.scale = tf.Variable(float(initial_scale), trainable=False, dtype=tf.float32, name="scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="good_steps")
        self.growth_interval, self.factor = int(growth_interval), float(factor)

    def scaled(self, loss):
        return loss * tf.cast(self.scale, loss.dtype)

    def unscaled(self, grads):
        return [scale_gradient(g, 1.0 / self.scale) for g in grads]

    def apply(self, optimizer, grads_and_vars):
        """Applies the (unscaled) gradients if all are finite, else skips the step; then updates
        the factor. The optimizer's slots are made first: none may be created inside a branch."""
        grads_and_vars = list(grads_and_vars)
        with tf.init_scope():  # eagerly, as apply_gradients does (EMA's slots read the step count)
            optimizer._create_all_weights([v for _, v in grads_and_vars])
        finite = all_finite([g for g, _ in grads_and_vars])

        def apply_step():
            optimizer.apply_gradients(grads_and_vars)
            return tf.constant(True)

        tf.cond(finite, apply_step, lambda: tf.constant(False))
        self.update(finite)
        return finite

    def update(self, finite):
        grown = self.good_steps + 1 >= self.growth_interval
        new_scale = tf.where(finite, tf.where(grown, self.scale * self.factor, self.scale),
                             tf.maximum(self.scale / self.factor, 1.0))
        self.good_steps.assign(tf.where(finite & ~grown, self.good_steps + 1, tf.zeros_like(self.good_steps)))
        self.scale.assign(new_scale)
