"""Two tf2onnx op handlers that bert4keras's graph needs; registered when this module is imported.

- ``BroadcastArgs``: tf2onnx 1.17 has no handler for it. It appears where bert4keras's
  ``sequence_masking`` calls ``K.where(mask, scores, -inf)`` on a mask of another rank than the
  attention scores. The handler pads both shape vectors with leading 1s to the same rank and takes,
  per axis, the other vector's size where one is 1: exactly numpy's broadcast rule, a size of 0
  included.
- ``Select`` / ``SelectV2``: tf2onnx turns a float select into ``cond * x + (1 - cond) * y``
  unless it sees an infinity among the *constant* inputs. bert4keras's ``-inf`` reaches the select
  through a ``BroadcastTo``, so the constant goes unseen and every masked score becomes
  ``0 * -inf = NaN`` (IEEE 754). ONNX ``Where`` is always used instead: it selects, it does not
  multiply.
"""
import numpy as np
from onnx import TensorProto, helper
from tf2onnx import utils
from tf2onnx.handler import tf_op
from tf2onnx.onnx_opset.controlflow import Select


@tf_op("BroadcastArgs")
class BroadcastArgs:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        output, dtype, shape = node.output[0], node.output_dtypes[0], node.output_shapes[0]
        inputs = list(node.input)
        ctx.remove_node(node.name)
        shapes = [ctx.make_node("Cast", [s], attr={"to": TensorProto.INT64}).output[0] for s in inputs]
        ranks = [ctx.make_node("Shape", [s]).output[0] for s in shapes]
        rank = ctx.make_node("Max", ranks).output[0]
        one = helper.make_tensor("value", TensorProto.INT64, [1], [1])
        padded = []
        for s, r in zip(shapes, ranks):
            missing = ctx.make_node("Sub", [rank, r]).output[0]
            ones = ctx.make_node("ConstantOfShape", [missing], attr={"value": one}).output[0]
            padded.append(ctx.make_node("Concat", [ones, s], attr={"axis": 0}).output[0])
        scalar_one = ctx.make_const(utils.make_name("one"), np.array(1, np.int64)).output[0]
        first_is_one = ctx.make_node("Equal", [padded[0], scalar_one]).output[0]
        chosen = ctx.make_node("Where", [first_is_one, padded[1], padded[0]]).output[0]
        ctx.make_node("Cast", [chosen], outputs=[output], attr={"to": dtype}, dtypes=[dtype], shapes=[shape])


@tf_op(["Select", "SelectV2"])
class SelectKeepingInfinities:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        node.set_attr("handles_nan", True)  # read by tf2onnx's own handler: use Where
        Select.version_9(ctx, node, **kwargs)
