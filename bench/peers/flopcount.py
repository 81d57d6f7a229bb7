"""Analytic FLOPs of one training step of the benchmark's classifier (pure Python).

Counted: the matrix multiplications, 2 FLOPs per multiply-add, for a batch of ``B`` sequences
padded to ``n`` tokens through a BERT encoder of ``L`` layers, width ``d``, FFN width ``d_ff``:

    per layer, forward
      Q, K, V projections        3 * 2*B*n*d*d
      attention scores Q K^T         2*B*n*n*d      (all heads together: h * d_head = d)
      scores x V                     2*B*n*n*d
      attention output projection    2*B*n*d*d
      FFN in and out             2 * 2*B*n*d*d_ff
      = 2*B*n*(4*d^2 + 2*d*d_ff) + 4*B*n^2*d
    head, forward (on [CLS] only): 2*B*d*units + 2*B*units*labels
    encoder+head forward  F = L * (per layer) + head
    backward = 2 F  (every matmul has two gradient matmuls, one per operand: the gradient of the
                     activations and the gradient of the weights, or of both activations for
                     Q K^T and scores x V; the bottom layer's input gradient is needed too, for
                     the embedding tables)
    training step = 3 F

Not counted (their FLOPs are a few % of the matmuls, their time is not): embedding lookups and
their scatter-add gradient, softmax, layer norms, GELU, dropout, bias adds, residual adds, the
loss, and the Adam update (~10 FLOPs a parameter, 22.7 M parameters: 0.2 GFLOP a step). Padded
positions are computed like real tokens by all three systems, so ``n`` is the padded length.

For MiniLM-L6 (d 384, d_ff 1536, L 6) at B 32, n 128: F = 91.8 GFLOP, a training step 275.4 GFLOP.
"""

MINILM = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6}


def layer_forward_flops(batch, seq_len, d, d_ff):
    tokens = batch * seq_len
    return 2 * tokens * (4 * d * d + 2 * d * d_ff) + 4 * batch * seq_len * seq_len * d


def forward_flops(batch, seq_len, config=None, head_units=256, num_labels=8):
    config = config or MINILM
    d, d_ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    head = 2 * batch * d * head_units + 2 * batch * head_units * num_labels
    return layers * layer_forward_flops(batch, seq_len, d, d_ff) + head


def train_step_flops(batch, seq_len, config=None, head_units=256, num_labels=8):
    return 3 * forward_flops(batch, seq_len, config, head_units, num_labels)


def run_flops(shapes, config=None, head_units=256, num_labels=8):
    """Training FLOPs of a list of ``(batch, padded length)`` batches."""
    return sum(train_step_flops(b, n, config, head_units, num_labels) for b, n in shapes)


def mlm_train_step_flops(batch, seq_len, predicted, vocab_size, config=None):
    """A masked-LM training step: the encoder (``train_step_flops`` without its classifier head)
    plus the MLM head (``MLM-Dense`` d x d and the tied d x vocab projection) at ``predicted``
    positions per sequence: 20 of 128 for xtune (the masked slots), all 128 for ``BertForMaskedLM``."""
    config = config or MINILM
    d, layers = config["hidden_size"], config["num_hidden_layers"]
    encoder = layers * layer_forward_flops(batch, seq_len, d, config["intermediate_size"])
    head = 2 * batch * predicted * (d * d + d * vocab_size)
    return 3 * (encoder + head)
