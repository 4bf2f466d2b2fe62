"""A small convolution model for the layout tests (channels first, as ONNX writes it)."""

from __future__ import annotations

import numpy as np

import accelopt.ir as ir
from accelopt.ir.graph import Graph


def conv_model(seed: int = 0) -> Graph:
    """Conv -> Relu -> grouped Conv -> residual Add -> per-channel bias Add -> Relu -> strided 1x1 Conv."""
    rng = np.random.default_rng(seed)
    g = Graph("cnn")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", 3, 8, 8)))

    def c(name: str, shape: tuple[int, ...], scale: float = 0.3) -> ir.Value:
        return g.add_initializer(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    h1 = g.add_node("Conv", [x, c("w1", (8, 3, 3, 3)), c("b1", (8,))], {"pads": [1, 1, 1, 1]}, name="conv1").output
    r1 = g.add_node("Relu", [h1], name="relu1").output
    h2 = g.add_node("Conv", [r1, c("w2", (8, 4, 3, 3))], {"pads": [1, 1, 1, 1], "group": 2}, name="conv2").output
    s = g.add_node("Add", [h2, r1], name="residual").output
    s2 = g.add_node("Add", [s, c("chan_bias", (1, 8, 1, 1))], name="bias").output
    r2 = g.add_node("Relu", [s2], name="relu2").output
    y = g.add_node("Conv", [r2, c("w3", (4, 8, 1, 1))], {"strides": [2, 2]}, name="conv3").output
    g.set_outputs([y])
    return g
