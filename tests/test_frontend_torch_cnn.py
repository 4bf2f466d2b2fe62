"""torch.export frontend beyond BERT: convolution, pooling, batch norm, padding and scatter converters, and
whole tiny models (a ResNet-style CNN, MobileBERT, ConvBERT, Funnel, ViT, GPT-2).

Every numerical check compares the interpreter with torch on seeded inputs, at two input sizes where
the export has a dynamic dim.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cnn_models import FAMILIES, family_inputs, family_model, images, tiny_resnet
from torch import nn

from accelopt.errors import FrontendError
from accelopt.frontends.torch_export import import_exported_program, load_torch
from modelzoo import max_abs_errors

TOL = 1e-5


def _check(module: nn.Module, example: tuple[np.ndarray, ...], *others: tuple[np.ndarray, ...]) -> Any:
    """Load ``module`` and compare with torch on the example and on ``others`` (scaled max abs error)."""
    model = load_torch(module.eval(), tuple(torch.from_numpy(a) for a in example))
    names = [v.name for v in model.graph.inputs]
    for arrays in (example, *others):
        feed = dict(zip(names, arrays))
        ours, ref = model.run(feed), model.reference(feed)
        for k, e in max_abs_errors(ours, ref).items():
            scale = max(1.0, float(np.max(np.abs(ref[k]))))
            assert e / scale <= TOL, (k, e, [a.shape for a in arrays])
            assert ours[k].dtype == ref[k].dtype, k
    return model


def _r(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------ converters
class _Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.t1 = nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.t2 = nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 3), padding=(1, 0), dilation=(1, 2), groups=2)
        self.c1 = nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)
        self.c1same = nn.Conv1d(4, 4, 4, padding="same", bias=False)
        self.c2 = nn.Conv2d(4, 8, (3, 2), stride=(1, 2), padding=(1, 0))
        self.c3 = nn.Conv3d(4, 2, 2, padding=1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.c1(x1), self.c1same(x1), self.c2(x2), self.c3(x3), self.t1(x1), self.t2(x2)


def test_convolutions_match_torch() -> None:
    m = _check(_Convs(), (_r(2, 4, 11), _r(2, 4, 7, 6), _r(2, 4, 3, 4, 5)), (_r(3, 4, 11, seed=1), _r(3, 4, 7, 6),
                                                                             _r(3, 4, 3, 4, 5)))  # fmt: skip
    assert m.graph.op_counts()["Conv"] == 4 and m.graph.op_counts()["ConvTranspose"] == 2


class _Pools(nn.Module):
    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v2, i2 = F.max_pool2d(x2, (3, 2), (2, 2), (1, 1), dilation=(1, 2), ceil_mode=True, return_indices=True)
        return (
            F.max_pool1d(x1, 3, 2, 1, ceil_mode=True),
            v2,
            i2,
            F.max_pool3d(x3, 2),
            F.avg_pool1d(x1, 4, 3, 2, ceil_mode=True, count_include_pad=True),
            F.avg_pool2d(x2, 3, 2, 1, count_include_pad=False),
            F.avg_pool3d(x3, 2, 1, 1, ceil_mode=True),
            F.adaptive_avg_pool2d(x2, 1),
            F.adaptive_max_pool1d(x1, 1),
            F.adaptive_avg_pool2d(x2, (3, 2)),
        )


def test_pooling_matches_torch_indices_included() -> None:
    m = _check(_Pools(), (_r(2, 3, 13), _r(2, 3, 9, 8), _r(2, 3, 4, 4, 5)), (_r(3, 3, 13, seed=1), _r(3, 3, 9, 8),
                                                                             _r(3, 3, 4, 4, 5)))  # fmt: skip
    ops = m.graph.op_counts()
    assert ops["MaxPool"] >= 2 and ops["AveragePool"] >= 3 and ops["GlobalMaxPool"] == 1
    assert m.graph.outputs[2].dtype.np == np.int64


class _Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bn1 = nn.BatchNorm1d(4)
        self.bn2 = nn.BatchNorm2d(4, affine=False, eps=1e-3)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        self.bn1.weight.data.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.bn1(x), self.bn1(x[:, :, 0]), self.bn2(y)


def test_batch_norm_matches_torch() -> None:
    m = _check(_Norms(), (_r(2, 4, 5), _r(2, 4, 3, 3)), (_r(3, 4, 5, seed=1), _r(3, 4, 3, 3, seed=2)))
    assert m.graph.op_counts()["BatchNormalization"] == 3


class _PadScatterIndex(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        padded = F.pad(x, (1, 2, 0, 1), value=0.5) + F.pad(x, (-1, 4, 0, 1))  # negative pads crop
        out = x.clone()
        out[:, 1:3] = x[:, 1:3] * 2  # slice_scatter, step 1
        every = x.clone()
        every[:, :, ::2] = -x[:, :, ::2]  # slice_scatter, step 2
        rows = torch.tensor([[0, 2], [1, 1]])
        cols = torch.tensor([1, 0])
        adjacent = x[:, rows, cols]  # index tensors on dims 1 and 2: broadcast dims in place
        apart = x.unsqueeze(2)[:, torch.tensor([2, 0]), :, torch.tensor([1, 3])]  # dims 1 and 3: first
        return padded, out, every, adjacent, apart


def test_pad_slice_scatter_and_advanced_indexing_match_torch() -> None:
    m = _check(_PadScatterIndex(), (_r(2, 3, 6),), (_r(4, 3, 6, seed=1),))
    ops = m.graph.op_counts()
    assert ops["Pad"] == 2 and ops["ScatterElements"] == 1


class _CnnActivationsAndNorms(nn.Module):
    """What MobileNet/EfficientNet/ConvNeXt-style blocks use besides convolutions and pools."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gn = nn.GroupNorm(2, 4)
        self.gn.weight.data.uniform_(0.5, 1.5)
        self.gn_plain = nn.GroupNorm(4, 4, affine=False)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.prelu = nn.PReLU(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        acts = F.hardswish(x) + F.hardsigmoid(x) + F.leaky_relu(x, 0.1) + F.elu(x) + F.selu(x) + F.celu(x, 2.0)
        acts = acts + F.softplus(x) + F.mish(x) + F.relu6(x) + F.logsigmoid(x) + torch.log1p(x.abs())
        norms = (x.norm(dim=1), torch.linalg.vector_norm(x, 1, dim=(2, 3)), torch.linalg.vector_norm(x, float("inf")),
                 torch.linalg.vector_norm(x, 3, dim=-1, keepdim=True), F.normalize(x, dim=1))  # fmt: skip
        stats = (x.var(1), x.std((2, 3), correction=0, keepdim=True), torch.logsumexp(x, 1), *torch.var_mean(x, 3))
        return (acts, *norms, *stats, self.gn(x), self.gn_plain(x), self.inorm(x), self.prelu(x),
                F.pixel_shuffle(x, 2), F.pixel_unshuffle(x, 2), F.glu(x, 1))  # fmt: skip


def test_cnn_activations_and_norms_match_torch() -> None:
    _check(_CnnActivationsAndNorms(), (_r(2, 4, 6, 6),), (_r(3, 4, 6, 6, seed=1),))


def test_unsupported_forms_are_named() -> None:
    class Divisor(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(x, 2, divisor_override=3)

    with pytest.raises(FrontendError, match=r"divisor_override=3"):
        load_torch(Divisor(), (torch.randn(1, 2, 4, 4),))

    class Uneven(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.adaptive_avg_pool2d(x, 3)

    with pytest.raises(FrontendError, match=r"adaptive pooling of \[4, 5\] to \[3, 3\]"):
        load_torch(Uneven(), (torch.randn(1, 2, 4, 5),))

    class Cumprod(nn.Module):  # no converter: listed with its node name, as every missing ATen op
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumprod(x, 1) + F.conv2d(x, torch.ones(2, 2, 1, 1))

    with pytest.raises(FrontendError, match=r"1 node\(s\) use 1 unsupported ATen op\(s\):\n  aten.cumprod.default x1"):
        load_torch(Cumprod(), (torch.randn(1, 2, 4, 5),))


def test_training_mode_batch_norm_is_an_error_batch_statistics_are_not() -> None:
    bn = nn.BatchNorm2d(3).train()  # updates its running statistics
    with pytest.raises(FrontendError, match=r"mutates state in forward \(BUFFER_MUTATION of running_mean"):
        import_exported_program(torch.export.export(bn, (torch.randn(2, 3, 4, 4),)))

    class BatchStats(nn.Module):  # normalizes with the batch's own statistics, nothing to update
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([0.5, 1.0, 1.5]))
            self.b = nn.Parameter(torch.tensor([0.1, -0.2, 0.3]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.batch_norm(x, None, None, self.w, self.b, training=True, eps=1e-3)

    _check(BatchStats(), (_r(2, 3, 4, 4),), (_r(5, 3, 4, 4, seed=1),))


class _Upsample(nn.Module):
    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            F.interpolate(x2, scale_factor=2.0, mode="nearest"),
            F.interpolate(x2, scale_factor=(1.5, 0.75), mode="nearest"),
            F.interpolate(x2, size=(7, 3), mode="nearest-exact"),
            F.interpolate(x2, size=(9, 2), mode="bilinear", align_corners=False),
            F.interpolate(x2, scale_factor=1.7, mode="bilinear", align_corners=True),
            F.interpolate(x2, size=(1, 4), mode="bilinear"),
            F.interpolate(x2, scale_factor=2.0, mode="bicubic"),
            F.interpolate(x2, size=(6, 9), mode="bicubic", align_corners=True),
            F.interpolate(x1, scale_factor=2.5, mode="linear"),
            F.interpolate(x3, size=(3, 5, 4), mode="trilinear"),
            F.interpolate(x3, scale_factor=2.0, mode="nearest"),
        )


def test_upsampling_matches_torch() -> None:
    m = _check(_Upsample(), (_r(2, 3, 10), _r(2, 3, 5, 6), _r(2, 2, 2, 3, 4)), (_r(3, 3, 10, seed=1),
                                                                              _r(3, 3, 5, 6), _r(3, 2, 2, 3, 4)))  # fmt: skip
    assert m.graph.op_counts()["Resize"] >= 5  # torch decomposes some modes to gathers first


# ------------------------------------------------------------------ whole models
def test_tiny_resnet_matches_torch() -> None:
    m = _check(tiny_resnet(), (images(2, 32, 0),), (images(3, 32, 1),))
    ops = m.graph.op_counts()
    assert {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "Resize"} <= set(ops)


#: the exports that take 25-40 s here run with the slow tests
_SLOW = {"funnel", "mobilebert", "convbert"}


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in _SLOW else f for f in FAMILIES])
def test_transformer_families_match_torch(family: str, caplog: pytest.LogCaptureFixture) -> None:
    model = family_model(family)
    example = family_inputs(family, 2, 32 if family == "vit" else 8, seed=0)
    with caplog.at_level(logging.WARNING, logger="accelopt.frontends.torch_export"):
        loaded = load_torch(model, example)
    if family == "gpt2":  # the key/value cache is dropped, and the log says so
        assert "exported with use_cache=False" in caplog.text
        assert loaded.output_names == ["last_hidden_state"]
    else:  # encoders return no cache, whatever their config says: nothing to drop, nothing to say
        assert "use_cache" not in caplog.text
    dynamic_seq = family != "vit" and isinstance(loaded.graph.inputs[0].shape[1], str)
    other = family_inputs(family, 3, 32 if family == "vit" else (12 if dynamic_seq else 8), seed=1)
    for feed in (example, other):
        ours, ref = loaded.run(feed), loaded.reference(feed)
        errs = max_abs_errors(ours, ref)
        assert max(errs.values()) <= TOL, (family, errs)
