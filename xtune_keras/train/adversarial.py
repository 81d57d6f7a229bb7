"""Adversarial training (FGM, PGD) and R-Drop as an eager-compatible Keras ``train_step``.

bert4keras's own adversarial example rewrites the Keras 2.3 graph-mode training function; it does
not run on TensorFlow 2.21. Here the same ideas are a ``keras.Model`` wrapping the classifier:

* FGM (Miyato et al. 2017, "Adversarial Training Methods for Semi-Supervised Text
  Classification"): perturb the token embeddings by ``r = epsilon * g / ||g||`` (``g``: gradient
  of the loss w.r.t. the embedding matrix) and train on the clean plus the adversarial loss.
* PGD (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks"):
  ``steps`` ascent steps of size ``alpha`` inside the ``epsilon``-ball, adversarial gradients of
  the last step added to the clean ones.
* R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks"): two dropout
  passes, their mean task loss plus ``rdrop_alpha`` times the symmetric KL between them.

The embedding gradient is non-zero only on the rows of the batch's tokens, and so is r: FGM and
PGD perturb and restore those rows (``gradient_rows``), not the whole matrix.

The same step also takes a batch cut into micro-batches by length (``train.micro_batches``,
batches.PaddedBatches): it sums the parts' gradients, weighted by their share of the batch, into
the whole batch's before the one update, so FGM and PGD perturb by the whole batch's gradient.

The trainer is only the training loop. ``trainer.classifier`` is the model to save, reload and
predict with (``saveable_model(model)`` picks it): a saved ``.h5`` holds nothing of the trainer,
and ``load_weights`` of a classifier ``.h5`` must go to ``trainer.classifier`` too.
"""
import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.errors import XtuneError
from xtune_keras.keys import ADVERSARIAL
from xtune_keras.schema import check_value
from xtune_keras.registry import Registry
from xtune_keras.train.optimizers import summed_rows

ACTIVATIONS = ("sigmoid", "softmax")
EMBEDDING_LAYER = "Embedding-Token"


def unit_direction(g):
    """``g / ||g||`` (Frobenius norm); zero where the gradient is zero (no NaN)."""
    return tf.math.divide_no_nan(g, tf.norm(g))


def project_to_ball(r, epsilon):
    """Shrink ``r`` onto the L2 ball of radius ``epsilon`` if it lies outside (PGD's projection)."""
    return r * tf.minimum(1.0, epsilon / tf.maximum(tf.norm(r), 1e-12))


def gradient_rows(g, variable):
    """``(rows, gradient)``: the embedding gradient on the rows it touches, each row once, in
    ascending order. The rest of the gradient is zero, so the perturbation is too: only these rows
    are perturbed and restored, not the whole matrix (250k x 384 for e5)."""
    if g is None:
        return tf.zeros([0], tf.int32), tf.zeros([0, variable.shape[-1]], variable.dtype)
    if not isinstance(g, tf.IndexedSlices):
        return tf.range(tf.shape(variable)[0]), tf.convert_to_tensor(g)
    return summed_rows(g.values, g.indices)  # the same rows in the same order at every PGD step


def add_gradients(a, b):
    """``a + b``; two ``IndexedSlices`` stay sparse (duplicate rows are summed by the optimizer)."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


def symmetric_kl(logits_p, logits_q, activation="sigmoid"):
    """R-Drop's ``(KL(P||Q) + KL(Q||P)) / 2`` per example, from logits.

    sigmoid: Bernoulli per label, averaged over labels like ``bce``; the symmetric sum reduces to
    ``(p - q) * (a - b)`` for logits ``a, b``. softmax: categorical, summed over classes.
    """
    if activation == "sigmoid":
        p, q = tf.sigmoid(logits_p), tf.sigmoid(logits_q)
        return tf.reduce_mean((p - q) * (logits_p - logits_q), -1) / 2
    log_p, log_q = tf.nn.log_softmax(logits_p), tf.nn.log_softmax(logits_q)
    return tf.reduce_sum((tf.exp(log_p) - tf.exp(log_q)) * (log_p - log_q), -1) / 2


def normalize_method(method):
    return None if method in (None, False, "", "none") else method


def check_options(method, epsilon, alpha, steps, rdrop_alpha, activation):
    """The declared ranges of ``train.adversarial.*`` and ``train.rdrop_alpha`` (keys.py), for
    callers that build a trainer without a YAML file."""
    if method is not None:
        METHODS.get(method, "train.adversarial.method")
    for name, value in (("epsilon", epsilon), ("alpha", alpha), ("steps", steps)):
        check_value("train.adversarial." + name, value, key=ADVERSARIAL[name])
    check_value("train.rdrop_alpha", rdrop_alpha)
    if activation not in ACTIVATIONS:
        raise XtuneError("model.loss: activation %r is not one of %s" % (activation, ", ".join(ACTIVATIONS)))


def replicas():
    """Replicas training in sync: 1 outside a tf.distribute strategy (train.strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def is_split(x):
    """Whether inputs are micro-batches: a tuple of input dicts (one dict per part)."""
    return isinstance(x, (tuple, list)) and len(x) > 0 and all(isinstance(part, dict) for part in x)


def micro_batches_of(data):
    """``[(x, y, sample_weight)]``: the parts of a micro-batched batch (``PaddedBatches`` with
    ``micro_batches``: x is a tuple of input dicts, y a tuple of label arrays), or the batch
    itself as the one part (x a dict, a tensor or a list of tensors)."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if not is_split(x):
        return [(x, y, sample_weight)]
    weights = sample_weight if sample_weight is not None else (None,) * len(x)
    return list(zip(x, y, weights))


def part_shares(parts):
    """Each part's share of the batch's examples; ``[None]`` for a single part (no scaling, so an
    unsplit batch gives bit for bit the gradients it always gave)."""
    if len(parts) == 1:
        return [None]
    sizes = [tf.cast(tf.shape(y)[0], tf.float32) for _, y, _ in parts]
    total = tf.add_n(sizes)
    return [size / total for size in sizes]


class AdversarialTrainer(keras.Model):
    """Wraps ``classifier`` (inputs -> logits) with an adversarial / R-Drop ``train_step``.

    Compile the trainer (loss, metrics, optimizer) and ``fit`` it; save ``trainer.classifier``.
    Logs: ``loss`` (the objective on clean inputs), ``adv_loss`` (on perturbed embeddings),
    ``task_loss`` and ``rdrop_kl`` (with R-Drop), then the compiled metrics.
    """

    def __init__(self, classifier, method="fgm", epsilon=1.0, alpha=0.3, steps=3, rdrop_alpha=0.0,
                 activation="sigmoid", embedding_layer=EMBEDDING_LAYER, loss_scale=None, **kwargs):
        # float32 whatever the global policy: Keras wraps a mixed_float16 model's optimizer in its
        # LossScaleOptimizer at compile; ``loss_scale`` (loss_scale.DynamicLossScale) does it here.
        super().__init__(name=kwargs.pop("name", "adversarial_trainer"), dtype="float32", **kwargs)
        self.loss_scale = loss_scale
        method = normalize_method(method)
        check_options(method, epsilon, alpha, steps, rdrop_alpha, activation)
        if method and embedding_layer not in [layer.name for layer in classifier.layers]:
            raise XtuneError("train.adversarial: the model has no embedding layer %r to perturb"
                             % embedding_layer)
        self.classifier, self.method, self.embedding_layer = classifier, method, embedding_layer
        self.epsilon, self.alpha, self.steps = float(epsilon), float(alpha), int(steps)
        self.rdrop_alpha, self.activation = float(rdrop_alpha), activation
        names = ["loss"] + (["adv_loss"] if method else [])
        names += ["task_loss", "rdrop_kl"] if rdrop_alpha else []
        # Own loss trackers: compiled_loss's tracker would average every pass (clean, adversarial).
        self.trackers = [keras.metrics.Mean(name=n) for n in names]
        self._traced_part_gradients = None  # micro-batches: part_gradients as a tf.function

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # A recompile (gradual unfreezing) changes the trainable variables the trace captured.
        self._traced_part_gradients = None

    @property
    def embeddings(self):
        return self.classifier.get_layer(self.embedding_layer).embeddings

    @property
    def metrics(self):
        compiled = getattr(self, "compiled_metrics", None)
        return list(self.trackers) + (compiled.metrics if compiled is not None else [])

    def call(self, inputs, training=None):
        if is_split(inputs):  # Keras calls the model once on the first batch to build it
            return tf.concat([self.classifier(x, training=training) for x in inputs], 0)
        return self.classifier(inputs, training=training)

    def step_variables(self):
        """What a step updates: the classifier's trainable variables (frozen layers stay out)."""
        return list(self.classifier.trainable_variables)

    def task_loss(self, y, logits, sample_weight=None):
        return self.compiled_loss(y, logits, sample_weight, regularization_losses=self.classifier.losses)

    def objective(self, x, y, sample_weight=None):
        """``(loss, clean logits, extra logs)``: the task loss, or R-Drop's two-pass loss."""
        if not self.rdrop_alpha:
            logits = self(x, training=True)
            return self.task_loss(y, logits, sample_weight), logits, {}
        # Both dropout passes in one call on the batch stacked twice, as the R-Drop paper does.
        twice = lambda t: None if t is None else tf.concat([t, t], 0)  # noqa: E731
        both = self(tf.nest.map_structure(twice, x), training=True)
        logits, logits2 = tf.split(both, 2, axis=0)
        task = (self.task_loss(y, logits, sample_weight) + self.task_loss(y, logits2, sample_weight)) / 2
        kl = tf.reduce_mean(symmetric_kl(logits, logits2, self.activation))
        # Under a tf.distribute strategy compiled_loss returns each replica's loss divided by the
        # number of replicas, so that the summed gradients are those of the global mean; the KL, a
        # plain mean, is divided alike (else its gradient counts once per replica).
        return task + self.rdrop_alpha * kl / replicas(), logits, {"task_loss": task, "rdrop_kl": kl}

    def loss_and_gradients(self, parts, variables):
        """Objective and its gradients w.r.t. ``variables`` and the embedding matrix (watched even
        when frozen: the perturbation needs its gradient, the optimizer does not touch it).

        ``parts``: the micro-batches of one batch (one part without ``train.micro_batches``). The
        objective is a per-example mean, so the batch's is the parts' means weighted by their
        share of the examples; so are the gradients, summed here into the whole batch's.
        """
        if len(parts) == 1:
            (x, y, sample_weight), = parts
            loss, logits, extra, grads = self.part_gradients(x, y, sample_weight, None, bool(variables))
            logits = [logits]
        else:
            # One traced function for every part (their shapes differ only in batch and length):
            # the step's graph is not traced once per part.
            if self._traced_part_gradients is None:
                self._traced_part_gradients = tf.function(self.part_gradients, reduce_retracing=True)
            loss, logits, extra, grads = 0.0, [], {}, None
            for (x, y, sample_weight), share in zip(parts, part_shares(parts)):
                part_loss, part_logits, part_extra, part_grads = self._traced_part_gradients(
                    x, y, sample_weight, share, bool(variables))
                grads = part_grads if grads is None else [add_gradients(a, b) for a, b in zip(grads, part_grads)]
                loss += part_loss
                logits.append(part_logits)
                for key, value in part_extra.items():
                    extra[key] = extra.get(key, 0.0) + value
        g_embedding = grads.pop() if self.method else None
        return loss, logits, extra, grads, g_embedding

    def part_gradients(self, x, y, sample_weight, share, with_variables):
        """``(loss, logits, extra logs, gradients)`` of one part, loss and logs scaled by ``share``
        (None: not scaled); gradients w.r.t. the trainable variables (if ``with_variables``) and
        then the embedding matrix (if perturbing)."""
        embeddings = self.embeddings if self.method else None
        watched = (self.step_variables() if with_variables else []) + (
            [embeddings] if embeddings is not None else [])
        with tf.GradientTape() as tape:
            if embeddings is not None:
                tape.watch(embeddings)
            loss, logits, extra = self.objective(x, y, sample_weight)
            if share is not None:
                loss = loss * share
                extra = {key: value * share for key, value in extra.items()}
            target = loss if self.loss_scale is None else self.loss_scale.scaled(loss)
        grads = tape.gradient(target, watched)
        return loss, logits, extra, grads if self.loss_scale is None else self.loss_scale.unscaled(grads)

    def perturb(self, rows, values):
        """Set the embedding ``rows`` to ``values`` (the others are never perturbed)."""
        return self.embeddings.scatter_update(tf.IndexedSlices(values, rows))

    def perturbed_gradients(self, parts, variables, g_embedding):
        """Loss and gradients at the adversarial embeddings, then the exact clean ones back."""
        rows, g = gradient_rows(g_embedding, self.embeddings)
        clean = tf.gather(self.embeddings, rows)  # a snapshot: put back bit for bit, no r subtracted
        r = METHODS.get(self.method)(self, parts, rows, g, clean)
        self.perturb(rows, clean + r)
        loss, _, _, grads, _ = self.loss_and_gradients(parts, variables)
        self.perturb(rows, clean)
        return loss, grads

    def compute_gradients(self, data):
        """``(gradients, variables, clean logits per part, logs)`` of one batch, nothing applied yet."""
        parts = micro_batches_of(data)
        variables = self.step_variables()
        loss, logits, logs, grads, g_embedding = self.loss_and_gradients(parts, variables)
        logs = dict(logs, loss=loss)
        if self.method:
            # Miyato et al. / Madry et al.: minimise clean + adversarial loss, i.e. sum the grads.
            # With micro-batches the perturbation comes from the whole batch's embedding gradient.
            logs["adv_loss"], adv_grads = self.perturbed_gradients(parts, variables, g_embedding)
            grads = [add_gradients(a, b) for a, b in zip(grads, adv_grads)]
        return grads, variables, logits, logs

    def train_step(self, data):
        grads, variables, logits, logs = self.compute_gradients(data)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if self.loss_scale is None:
            self.optimizer.apply_gradients(pairs)
        else:  # skips the update when a scaled gradient overflowed
            self.loss_scale.apply(self.optimizer, pairs)
        return self.update_metrics(micro_batches_of(data), logits, logs)

    def test_step(self, data):
        parts = micro_batches_of(data)
        logits = [self(x, training=False) for x, _, _ in parts]
        shares = part_shares(parts)
        losses = [self.task_loss(y, part_logits, sw) for (_, y, sw), part_logits in zip(parts, logits)]
        loss = losses[0] if shares[0] is None else tf.add_n([part * s for part, s in zip(losses, shares)])
        return self.update_metrics(parts, logits, {"loss": loss})

    LOSS_LOGS = ("loss", "adv_loss", "task_loss")  # divided by the replicas under a strategy

    def update_metrics(self, parts, logits, logs):
        if replicas() > 1:  # log the per-example losses, not each replica's share (see objective)
            logs = {k: v * replicas() if k in self.LOSS_LOGS else v for k, v in logs.items()}
        # Weight batch means by size, as Keras's own loss tracker does.
        batch = tf.add_n([tf.shape(part_logits)[0] for part_logits in logits])
        for tracker in self.trackers:
            if tracker.name in logs:
                tracker.update_state(logs[tracker.name], sample_weight=batch)
        for (_, y, sample_weight), part_logits in zip(parts, logits):
            self.compiled_metrics.update_state(y, part_logits, sample_weight)
        results = {t.name: t.result() for t in self.trackers if t.name in logs}
        results.update((m.name, m.result()) for m in self.compiled_metrics.metrics)
        return results


# How the embedding perturbation r is found: fn(trainer, parts, rows, embedding gradient, clean
# embeddings) -> r, each on the embedding ``rows`` the batch uses (``gradient_rows``). Options
# (epsilon, alpha, steps) live on the trainer (train.adversarial).
METHODS = Registry("adversarial method")


@METHODS.register("fgm")
def fgm_perturbation(trainer, parts, rows, g, clean):
    """Miyato et al. 2017: one step of norm epsilon along the gradient."""
    return trainer.epsilon * unit_direction(g)


@METHODS.register("pgd")
def pgd_perturbation(trainer, parts, rows, g, clean):
    """Madry et al. 2018: ``steps`` ascent steps of size alpha, projected onto the epsilon-ball;
    the first steps only need the embedding gradient to move r. Every step's gradient has the
    same rows (the batch's tokens)."""
    r = tf.zeros_like(clean)
    for _ in range(trainer.steps - 1):
        r = project_to_ball(r + trainer.alpha * unit_direction(g), trainer.epsilon)
        trainer.perturb(rows, clean + r)
        g = gradient_rows(trainer.loss_and_gradients(parts, [])[-1], trainer.embeddings)[1]
    return project_to_ball(r + trainer.alpha * unit_direction(g), trainer.epsilon)


def build_trainer(classifier, method=None, epsilon=1.0, alpha=0.3, steps=3, rdrop_alpha=0.0,
                  activation="sigmoid", micro_batches=1, loss_scale=None):
    """The classifier itself when neither adversarial training, R-Drop, micro-batches
    (``train.micro_batches``: only the trainer's step reads split batches) nor loss scaling is on,
    else a trainer."""
    method = normalize_method(method)
    check_options(method, epsilon, alpha, steps, rdrop_alpha, activation)
    if method is None and not rdrop_alpha and micro_batches == 1 and loss_scale is None:
        return classifier
    return AdversarialTrainer(classifier, method, epsilon, alpha, steps, rdrop_alpha, activation,
                              loss_scale=loss_scale)


def saveable_model(model):
    """What to save / ``load_weights`` into: the wrapped classifier, or the model itself."""
    return model.classifier if isinstance(model, AdversarialTrainer) else model
