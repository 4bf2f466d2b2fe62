"""The seeded family zoo: small random-weight models of the transformer families users bring, plus a small CNN.

Twelve families (``FAMILIES``), each built from a transformers config with seeded weights (offline, no
downloads): ELECTRA, XLM-RoBERTa, CamemBERT, MPNet, DeBERTa-v2, MobileBERT, ConvBERT, T5 encoder, GPT-2, ViT,
Funnel and a small ResNet-style CNN. Each comes three ways (``PATHS``):

- ``legacy``: ``torch.onnx.export(..., dynamo=False)`` at opset 17 (TorchScript exporter, weights in the file);
- ``dynamo``: ``torch.onnx.export(..., dynamo=True)`` at opset 18 (weights as external data);
- ``torch``: the module itself through ``accelopt.load(module, example_inputs=...)``.

Text models take ``input_ids`` and ``attention_mask`` (``int64[batch, sequence]``), image models
``pixel_values`` (``float32[batch, 3, 32, 32]``); every model returns ``last_hidden_state``. What each family
exercises: MPNet and T5 an additive relative position bias (T5 without a 1/sqrt(d) scale, with RMS norms),
GPT-2 a fused QKV projection and a causal mask, DeBERTa-v2 its disentangled attention, MobileBERT Q/K from a
bottleneck and V from the layer input, ConvBERT a mixed attention, ViT no mask at all, Funnel pooling, the CNN
convolutions, batch norm and pooling.

Deviations from a family's defaults, each for a reason:

1. GPT-2 is built with ``use_cache=False``: with a cache its forward returns a ``DynamicCache``, which
   torch.export cannot take as an output.
2. T5's dynamo export uses ``attn_implementation="eager"``: with SDPA, torch 2.13's decompositions fail on
   its ``attn_output.reshape(*input_shape, -1)`` of a transposed tensor ("Cannot view a tensor with shape
   ... as a tensor with shape ...", the exporter's step 2/3). The legacy export and the torch path keep SDPA.
3. Models are traced at batch 2, sequence 16 (``EXAMPLE``). Funnel's exports run only at that length: the
   dynamo exporter specializes its sequence dim, and the TorchScript export bakes in shapes of its pooling.

Exports are cached like ``modelzoo``'s (``$ACCELOPT_TEST_CACHE``, keyed by family, exporter, config and the
torch/transformers versions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelzoo import cached_export, quiet

PATHS = ("legacy", "dynamo", "torch")
#: the opset each ONNX exporter writes
OPSETS = {"legacy": 17, "dynamo": 18}
VOCAB = 1000
IMAGE = (3, 32, 32)
#: the example batch and sequence length the models are exported and traced with (Funnel's exports only run at
#: the length they were traced with: the dynamo exporter specializes it, the TorchScript one bakes in shapes)
EXAMPLE = (2, 16)

_TEXT = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128}
_ROBERTA = {**_TEXT, "max_position_embeddings": 130, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
            "type_vocab_size": 1}


@dataclass(frozen=True)
class Family:
    """One family: the transformers model class, its config class and parameters, and how it is fed."""

    name: str
    model: str
    config: str
    params: dict[str, Any]
    image: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: config overrides for the dynamo exporter only (see the module docstring)
    dynamo_params: dict[str, Any] = field(default_factory=dict)
    pad_id: int = 0
    #: attention blocks the model has (0 for the CNN)
    attention_blocks: int = 2


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("electra", "ElectraModel", "ElectraConfig", {**_TEXT, "embedding_size": 32,
                                                            "max_position_embeddings": 128}),
        Family("xlm-roberta", "XLMRobertaModel", "XLMRobertaConfig", _ROBERTA, pad_id=1),
        Family("camembert", "CamembertModel", "CamembertConfig", _ROBERTA, pad_id=1),
        Family("mpnet", "MPNetModel", "MPNetConfig", {**_TEXT, "max_position_embeddings": 130, "pad_token_id": 1,
                                                       "relative_attention_num_buckets": 32}, pad_id=1),
        Family("deberta-v2", "DebertaV2Model", "DebertaV2Config",
               {**_TEXT, "max_position_embeddings": 128, "relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                "position_buckets": 32, "max_relative_positions": -1, "norm_rel_ebd": "layer_norm",
                "share_att_key": True, "position_biased_input": False, "type_vocab_size": 0}),
        Family("mobilebert", "MobileBertModel", "MobileBertConfig",
               {**_TEXT, "intermediate_size": 64, "embedding_size": 32, "intra_bottleneck_size": 32,
                "true_hidden_size": 32, "num_feedforward_networks": 2, "max_position_embeddings": 128}),
        Family("convbert", "ConvBertModel", "ConvBertConfig",
               {**_TEXT, "embedding_size": 32, "head_ratio": 2, "conv_kernel_size": 3, "max_position_embeddings": 128}),
        Family("t5", "T5EncoderModel", "T5Config",
               {"vocab_size": VOCAB, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4,
                "relative_attention_num_buckets": 32, "feed_forward_proj": "relu"},
               dynamo_params={"attn_implementation": "eager"}),
        Family("gpt2", "GPT2Model", "GPT2Config",
               {"vocab_size": VOCAB, "n_positions": 128, "n_embd": 64, "n_layer": 2, "n_head": 4, "use_cache": False}),
        Family("vit", "ViTModel", "ViTConfig",
               {"image_size": IMAGE[1], "patch_size": 8, "num_channels": IMAGE[0], "hidden_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
               image=True, model_kwargs={"add_pooling_layer": False}),
        Family("funnel", "FunnelBaseModel", "FunnelConfig",
               {"vocab_size": VOCAB, "block_sizes": [1, 1], "d_model": 64, "n_head": 4, "d_head": 16,
                "d_inner": 128}),
        Family("cnn", "ResNetModel", "ResNetConfig",
               {"num_channels": IMAGE[0], "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1],
                "layer_type": "basic"},
               image=True, attention_blocks=0),
    )
}


def config(family: str, exporter: str = "torch") -> Any:
    import transformers

    fam = FAMILIES[family]
    params = {**fam.params, **(fam.dynamo_params if exporter == "dynamo" else {})}
    return getattr(transformers, fam.config)(**params)


def build(family: str, *, exporter: str = "torch", seed: int = 0) -> Any:
    """The family's model (eval mode, seeded weights) wrapped to take positional inputs and return a tuple."""
    import torch
    import transformers

    fam = FAMILIES[family]
    with quiet():
        torch.manual_seed(seed)
        model = getattr(transformers, fam.model)(config(family, exporter), **fam.model_kwargs).eval()
    return _wrapper(fam.image)(model).eval()


def _wrapper(image: bool) -> type:
    import torch

    class Text(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return (self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,)

    class Image(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: Any) -> Any:
            return (self.model(pixel_values=pixel_values).last_hidden_state,)

    return Image if image else Text


def input_names(family: str) -> list[str]:
    return ["pixel_values"] if FAMILIES[family].image else ["input_ids", "attention_mask"]


def inputs(family: str, batch: int = EXAMPLE[0], seq: int = EXAMPLE[1], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: token ids (never the pad id) with a right-padded mask (row 0 full; padded ids are the
    pad id), or normal pixel values."""
    rng = np.random.default_rng(seed)
    fam = FAMILIES[family]
    if fam.image:
        return {"pixel_values": rng.standard_normal((batch, *IMAGE)).astype(np.float32)}
    ids = rng.integers(3, VOCAB, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(1, batch):
        keep = int(rng.integers(max(1, seq // 2), seq))
        mask[b, keep:] = 0
        ids[b, keep:] = fam.pad_id
    return {"input_ids": ids, "attention_mask": mask}


def export(family: str, exporter: str, *, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cached ONNX export of ``family`` by ``exporter`` (``legacy`` or ``dynamo``)."""
    if exporter not in OPSETS:
        raise ValueError(f"unknown exporter {exporter!r} (legacy or dynamo)")
    fam = FAMILIES[family]
    opset = OPSETS[exporter]

    def write(path: Path) -> None:
        _export(build(family, exporter=exporter, seed=seed), family, path, exporter, opset)

    key = [family, exporter, opset, seed, fam.model, fam.params, fam.dynamo_params, fam.model_kwargs, EXAMPLE]
    return cached_export(f"family-{family}-{exporter}{opset}-s{seed}", key, write, cache_dir=cache_dir)


def _export(model: Any, family: str, path: Path, exporter: str, opset: int) -> None:
    import torch

    names = input_names(family)
    example = inputs(family)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    text = not FAMILIES[family].image
    if exporter == "dynamo":
        from torch.export import Dim

        batch = Dim("batch")
        dims = {0: batch, 1: Dim("sequence")} if text else {0: batch}
        how: dict[str, Any] = {"dynamo": True, "dynamic_shapes": {n: dims for n in names}, "external_data": True,
                               "verbose": False}
    else:
        axes = {0: "batch", 1: "sequence"} if text else {0: "batch"}
        out_axes = {0: "batch", 1: "sequence"} if text else {0: "batch"}
        how = {"dynamo": False, "dynamic_axes": {**{n: axes for n in names}, "last_hidden_state": out_axes},
               "do_constant_folding": True}
    with quiet(), torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["last_hidden_state"],
                          opset_version=opset, **how)


def load(family: str, path: str, *, seed: int = 0) -> Any:
    """``accelopt.load`` of the family through ``path`` (``legacy``, ``dynamo`` or ``torch``)."""
    import torch

    import accelopt

    if path == "torch":
        example = inputs(family)
        args = tuple(torch.from_numpy(example[n]) for n in input_names(family))
        with quiet():
            return accelopt.load(build(family, seed=seed), example_inputs=args)
    return accelopt.load(export(family, path, seed=seed))


__all__ = ["FAMILIES", "PATHS", "Family", "build", "config", "export", "input_names", "inputs", "load"]
