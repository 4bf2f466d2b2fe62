"""``Model``: an imported graph plus what is needed to run the original."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.ir.graph import Graph

ReferenceFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Model:
    """What a frontend returns.

    ``graph`` is the imported IR. ``reference`` runs the *original* model in
    its own runtime (onnxruntime for ONNX input, torch for torch input) and
    returns outputs keyed by the graph's output names. ``tokenizer`` is kept
    for text models (Hugging Face folders), so later steps can tokenize
    sample sentences.
    """

    graph: Graph
    source: str
    kind: str  # "onnx" | "torch" | "huggingface"
    reference_fn: ReferenceFn | None = None
    tokenizer: Any | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def run(self, inputs: Mapping[str, np.ndarray], *, keep_intermediates: bool = False) -> dict[str, np.ndarray]:
        """Run the IR graph with the reference interpreter."""
        from accelopt.interpreter import Interpreter

        interp = self.metadata.get("_interpreter")
        if interp is None or interp.graph is not self.graph:
            interp = Interpreter(self.graph)
            self.metadata["_interpreter"] = interp
        return interp.run(inputs, keep_intermediates=keep_intermediates)

    def reference(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the original model in its own runtime."""
        if self.reference_fn is None:
            raise RuntimeError(f"model {self.source!r} has no reference runtime")
        return self.reference_fn(inputs)

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.graph.outputs]
