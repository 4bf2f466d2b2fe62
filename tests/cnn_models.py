"""Small seeded models for the CNN / non-BERT frontend tests (no weights are downloaded).

* ``TinyResNet``: a ResNet-style CNN in plain torch (torchvision is not installable beside torch
  2.13 here): conv-BN-ReLU stem, ceil-mode max pool, a residual block, a pre-activation block whose
  BatchNorm follows an addition (no exporter can fold it into a conv), a depthwise conv, an average
  pool without padding in the count, nearest and bilinear upsampling (ONNX ``Resize``) and an
  adaptive average pool to 1x1.
* ``FAMILIES``: tiny transformers models with seeded random weights (MobileBERT, ConvBERT, Funnel,
  ViT, GPT-2) and their example inputs.
* ``export_onnx``: a module through either ONNX exporter into a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modelzoo import quiet  # the exporters' and transformers' chatter


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.block = nn.Sequential(
            nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1, bias=False)
        )
        self.pre_bn = nn.BatchNorm2d(8)  # after the residual addition: stays a BatchNormalization
        self.depthwise = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.avg = nn.AvgPool2d(2, 2, padding=1, count_include_pad=False)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = torch.relu(self.pre_bn(x + self.block(x)))
        x = self.avg(self.depthwise(x))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.interpolate(x, size=(x.shape[2] + 3, x.shape[3] + 1), mode="bilinear", align_corners=False)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny_resnet(seed: int = 0) -> TinyResNet:
    """``TinyResNet`` with seeded weights and non-trivial running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TinyResNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def images(batch: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


def text(batch: int, seq: int, seed: int, vocab: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[0, seq - 2 :] = 0  # one padded row
    return {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64), "attention_mask": mask}


_HIDDEN = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def _family(name: str) -> Any:
    import transformers as tr

    vocab = {"vocab_size": 100, "max_position_embeddings": 64}
    if name == "mobilebert":
        cfg = tr.MobileBertConfig(**_HIDDEN, **vocab, embedding_size=16, intra_bottleneck_size=16,
                                  true_hidden_size=16, num_feedforward_networks=2)  # fmt: skip
        return tr.MobileBertModel(cfg)
    if name == "convbert":
        return tr.ConvBertModel(tr.ConvBertConfig(**_HIDDEN, **vocab, embedding_size=32))
    if name == "funnel":
        cfg = tr.FunnelConfig(vocab_size=100, block_sizes=[1, 1], num_decoder_layers=1, d_model=32, n_head=4,
                              d_head=8, d_inner=64)  # fmt: skip
        return tr.FunnelModel(cfg)
    if name == "vit":
        return tr.ViTModel(tr.ViTConfig(**_HIDDEN, image_size=32, patch_size=8))
    if name == "gpt2":
        return tr.GPT2Model(tr.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64,
                                          bos_token_id=0, eos_token_id=0))  # fmt: skip
    raise ValueError(f"unknown family {name!r}")


def family_model(name: str, seed: int = 0) -> Any:
    """A tiny transformers model of ``name`` with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    with quiet():
        return _family(name).eval()


def family_inputs(name: str, batch: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Example inputs: ``size`` is the sequence length, or the image side for ViT."""
    if name == "vit":
        return {"pixel_values": images(batch, size, seed)}
    return text(batch, size, seed)


FAMILIES = ("mobilebert", "convbert", "funnel", "vit", "gpt2")


class _Positional(nn.Module):
    """Positional inputs for the exporters; the first output only."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, args)))
        return out if isinstance(out, torch.Tensor) else out[0]


def export_onnx(model: nn.Module, inputs: dict[str, np.ndarray], path: Path, *, exporter: str) -> Path:
    """``model`` (keyword inputs ``inputs``) through the legacy (opset 17) or dynamo (opset 18) exporter;
    output ``y``, dynamic batch."""
    names = list(inputs)
    wrapped = _Positional(model, names).eval()
    args = tuple(torch.from_numpy(inputs[n]) for n in names)
    how: dict[str, Any]
    if exporter == "dynamo":
        batch = torch.export.Dim("batch")
        how = {"dynamo": True, "opset_version": 18, "external_data": False, "verbose": False,
               "dynamic_shapes": (tuple({0: batch} for _ in names),)}  # fmt: skip
    else:
        axes = {n: {0: "batch"} for n in [*names, "y"]}
        how = {"dynamo": False, "opset_version": 17, "dynamic_axes": axes}
    with quiet(), torch.no_grad():
        torch.onnx.export(wrapped, args, str(path), input_names=names, output_names=["y"], **how)
    return path
