#!/usr/bin/env python3
"""Export a Keras model to ONNX with tf2onnx, optionally keeping its BatchNormalization nodes.

    export_keras.py model.keras -o model.onnx [--opset 17] [--keep-bn]
    export_keras.py model.h5 -o model.onnx --keep-bn
    export_keras.py saved_model_dir/ -o model.onnx

By default this is tf2onnx's own export (`tf2onnx.convert.from_keras` with every optimizer on),
which fuses each Conv followed by a BatchNormalization into the Conv: the file then holds
`W * gamma / sqrt(var + eps)` and no trace of the moving statistics, so nothing downstream
(`icefold diagnose`) can check whether they were ever updated.

`--keep-bn` turns that one fusion off and nothing else. In tf2onnx 1.17 the fusion is not a
graph rewriter or a converter option: it is the `("Conv", "BatchNormalization")` entry of the
back-to-back optimizer (`tf2onnx/optimizer/back_to_back_optimizer.py`,
`_optimize_conv_batchnorm_fusion`), which runs as `remove_back_to_back` in the optimizer list
that `from_keras(..., optimizers=...)` accepts. Leaving `remove_back_to_back` out entirely would
also keep its other merges (Transpose pairs, Cast pairs, Reshape pairs) from running and leave
extra Transposes around every BatchNormalization; so `--keep-bn` runs the same optimizer list with
a back-to-back optimizer that skips only the Conv+BatchNormalization entry. The result: the same
graph as the default export, with `BatchNormalization` nodes (Keras epsilon 1e-3, the layers'
moving mean and variance) after each Conv that had one.

What `--keep-bn` cannot keep: a BatchNormalization after a Dense layer (or on any 2-D tensor) is
not a FusedBatchNorm op in TensorFlow; Keras writes it as `x * scale + offset` and TensorFlow's
constant folding (before tf2onnx's optimizers run) turns it into constant Mul and Add nodes,
with or without this flag. icefold folds those into the preceding Gemm/MatMul like a BN.

The input keeps Keras' layout (NHWC for images); tf2onnx adds a Transpose (or a Reshape for a
single channel) after it, and icefold takes and returns data in the model's own shape.

Inputs: a `.keras` or `.h5` file, or a SavedModel directory written by Keras (`model.save(dir)`),
anything `tf.keras.models.load_model` opens. Tested with tensorflow-cpu 2.15 (Keras 2) and
tf2onnx 1.17 (tf2onnx 1.17 does not support Keras 3, which newer TensorFlow ships).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The key tf2onnx 1.17 registers the Conv+BatchNormalization fusion under.
CONV_BN_FUSION = ("Conv", "BatchNormalization")


def optimizers(keep_bn: bool):
    """tf2onnx's optimizer list: its default, or with the Conv+BatchNormalization fusion off.

    Returns `None` (tf2onnx's default list) unless `keep_bn`.
    """
    if not keep_bn:
        return None
    from tf2onnx import optimizer
    from tf2onnx.optimizer import back_to_back_optimizer as b2b

    # Checked up front: on another tf2onnx version the fusion may live elsewhere, and exporting
    # silently with the fusion on would defeat the point of --keep-bn.
    if CONV_BN_FUSION not in b2b._func_map or "remove_back_to_back" not in optimizer._get_optimizers():
        sys.exit(
            "this tf2onnx version does not register its Conv+BatchNormalization fusion where tf2onnx 1.17 "
            "does (optimizer 'remove_back_to_back', entry ('Conv', 'BatchNormalization')); install "
            "tf2onnx==1.17.* or update tools/export_keras.py"
        )

    class BackToBackKeepingBatchNorm(b2b.BackToBackOptimizer):
        """tf2onnx's back-to-back optimizer without its Conv+BatchNormalization fusion."""

        def _optimize(self, graph):
            fusion = b2b._func_map.pop(CONV_BN_FUSION)
            try:
                return super()._optimize(graph)
            finally:
                b2b._func_map[CONV_BN_FUSION] = fusion

    opts = dict(optimizer._get_optimizers())
    opts["remove_back_to_back"] = BackToBackKeepingBatchNorm
    return opts


def export(model, path: Path, opset: int = 17, keep_bn: bool = False, input_signature=None):
    """Converts an in-memory Keras model with tf2onnx and writes it to `path`.

    `input_signature` defaults to the model's own input spec (batch axis left symbolic).
    Returns the ONNX ModelProto.
    """
    import tf2onnx

    proto, _ = tf2onnx.convert.from_keras(
        model,
        input_signature=input_signature,
        opset=opset,
        optimizers=optimizers(keep_bn),
        output_path=str(path),
    )
    return proto


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help=".keras / .h5 file or Keras SavedModel directory")
    ap.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; icefold reads 11..=20)")
    ap.add_argument("--keep-bn", action="store_true",
                    help="turn off tf2onnx's Conv+BatchNormalization fusion so BN nodes (and their moving "
                         "statistics) stay in the file, for `icefold diagnose`")
    args = ap.parse_args()
    if args.output.resolve() == args.model.resolve():
        sys.exit("the output would overwrite the input model; choose another -o")

    import tensorflow as tf

    try:
        model = tf.keras.models.load_model(args.model, compile=False)
    except Exception as e:  # noqa: BLE001 -- every loader failure gets the same advice
        sys.exit(f"cannot load {args.model} as a Keras model ({type(e).__name__}: {e}); this script takes "
                 "a .keras or .h5 file or a SavedModel directory written by Keras `model.save`")
    proto = export(model, args.output, opset=args.opset, keep_bn=args.keep_bn)
    bn = sum(1 for n in proto.graph.node if n.op_type == "BatchNormalization")
    keras_bn = sum(1 for layer in model.submodules if isinstance(layer, tf.keras.layers.BatchNormalization))
    print(f"wrote {args.output}: opset {args.opset}, {len(proto.graph.node)} nodes, {bn} BatchNormalization "
          f"node(s) ({keras_bn} Keras BatchNormalization layer(s))")
    if args.keep_bn and bn < keras_bn:
        print(f"note: {keras_bn - bn} BatchNormalization layer(s) are not BN nodes: BN on 2-D tensors (after "
              "Dense) always becomes constant Mul/Add; icefold folds those into the Dense layer")
    if not args.keep_bn and keras_bn and not bn:
        print("note: tf2onnx fused every BatchNormalization into its Conv; add --keep-bn so `icefold diagnose` "
              "can check the moving statistics")


if __name__ == "__main__":
    main()
