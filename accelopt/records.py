"""What the pass manager records for each pass: the data behind the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AccuracyRecord:
    """Accuracy of one graph, against the reference and against the previous graph.

    ``metrics`` maps an output name to its metrics (max_abs, mean_abs, rel_l2,
    cosine_min, cosine_mean, and where they apply argmax_agreement and
    similarity_spearman); ``summary`` holds the worst value of each metric
    over all outputs.

    ``scope`` says what was compared: ``"model"``, the graph's outputs on the
    validation inputs; ``"local"``, only the values a pass rewrote (see
    ``accelopt.validation_local``): then ``vs_previous`` and ``per_output``
    hold the local metrics, keyed by the rewritten values' names, and
    ``vs_reference`` is empty unless a whole-model check was also made.
    """

    vs_reference: dict[str, float] = field(default_factory=dict)
    vs_previous: dict[str, float] = field(default_factory=dict)
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    ok: bool = True
    failures: list[str] = field(default_factory=list)  # "cosine_min 0.91 < 0.995 on last_hidden_state"
    scope: str = "model"


@dataclass
class Localization:
    """The first node whose output diverges between the old and new graphs."""

    node: str
    op: str
    value: str
    metric: str
    error: float
    detail: str = ""


@dataclass
class PassRecord:
    """One pass's entry in the report."""

    name: str
    spec: str  # the pass with its options, as a pipeline element
    family: str
    options: dict[str, Any]
    seconds: float = 0.0
    validate_seconds: float = 0.0
    modified: bool = False
    rolled_back: bool = False
    rollback_reason: str = ""
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    nodes_added: list[str] = field(default_factory=list)
    nodes_removed: list[str] = field(default_factory=list)
    param_bytes_before: dict[str, int] = field(default_factory=dict)
    param_bytes_after: dict[str, int] = field(default_factory=dict)
    macs_before: int | None = None
    macs_after: int | None = None
    accuracy: AccuracyRecord | None = None
    localization: Localization | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # rule match counts etc.
    near_misses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    #: the pass broke the graph (the verifier rejected its result) or raised; it was rolled back
    #: (status ``pass-error``); the text says what went wrong
    pass_error: str = ""
    #: the nodes the verifier found broken in the rejected result
    broken_nodes: list[str] = field(default_factory=list)
