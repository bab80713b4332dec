"""Every report: one base, one JSON shape (pinned), and prune_'s dry run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.recipe.runner import Evaluation
from tests import hf_zoo, zoo

COMMON = {"method", "config", "seconds", "skipped"}

# The sorted keys of each report's to_dict(): a change of shape is a deliberate edit here.
SHAPES = {
    "AccelerateReport": [
        "batch_sizes", "config", "layers", "method", "seconds", "skipped", "swapped", "threads",
    ],
    "PruneReport": [
        "allocation", "applied", "config", "layers", "method", "numel", "seconds", "skipped",
        "sparsity", "zeros",
    ],
    "StructuredReport": [
        "applied", "blocked", "config", "groups", "hidden_width", "latency_batch", "latency_ms",
        "latency_tried", "macs_after", "macs_before", "macs_reduction", "max_diff", "method",
        "params_after", "params_before", "params_removed", "plan", "refits", "seconds", "skipped",
        "speedup",
    ],
    "QuantizeReport": [
        "bytes_after", "bytes_before", "config", "layers", "method", "seconds", "skipped",
    ],
    "ShareReport": ["config", "layers", "method", "seconds", "skipped"],
    "FactorizeReport": [
        "budget", "config", "layers", "method", "params_after", "params_before", "seconds",
        "skipped",
    ],
    "BitsReport": [
        "baseline", "budget_bytes", "config", "layer_bits", "method", "model_bytes", "points",
        "predicted_bytes", "predicted_drop", "seconds", "skipped",
    ],
    "FinetuneReport": [
        "config", "epochs", "history", "method", "out_of_time", "pairs", "projections", "prune",
        "pruning", "seconds", "skipped", "steps", "stopped_early",
    ],
    "DistillReport": [
        "config", "epochs", "history", "method", "out_of_time", "pairs", "projections", "prune",
        "pruning", "seconds", "skipped", "steps", "stopped_early",
    ],
    "RecoverReport": [
        "budget_s", "config", "epochs", "history", "method", "out_of_time", "pairs",
        "projections", "prune", "pruning", "seconds", "skipped", "step_s", "steps",
        "stopped_early",
    ],
    "DepthReport": [
        "blocks", "config", "kept", "method", "num_layers_after", "num_layers_before",
        "params_after", "params_before", "seconds", "skipped",
    ],
    "ExecuTorchReport": [
        "atol", "bytes", "config", "delegated_ops", "dense_note", "input_shapes", "max_abs_diff",
        "method", "not_delegated", "output_names", "path", "quantize", "rtol", "seconds",
        "skipped", "sqnr_db", "total_ops",
    ],
    "ExportReport": [
        "atol", "batch_sizes", "bytes", "config", "dynamic_batch", "float_bytes", "forms",
        "input_names", "max_abs_diff", "method", "opset", "output_names", "path", "quantize",
        "quantized_max_abs_diff", "quantized_sqnr_db", "rtol", "seconds", "sequence_lengths",
        "skipped",
    ],
    "RecipeReport": [
        "comparison", "config", "method", "out", "recipe", "resumed_steps", "rows", "seconds",
        "skipped", "steps",
    ],
    "RuntimeReport": [
        "batch_sizes", "config", "latency_method", "memory_method", "method", "runtimes",
        "seconds", "skipped", "threads",
    ],
    "AutoReport": [
        "backend", "baseline", "config", "final", "frontier", "method", "seconds", "skipped",
        "space", "trials",
    ],
}  # fmt: skip


class _Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _digits():
    splits = pk.data.load_data("digits")
    train = splits.loader("train", batch_size=128, seed=0)
    return train, splits.loader("test", batch_size=512)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, pk.Report]:
    """One report of every type, each from a real (small) call."""
    tmp = tmp_path_factory.mktemp("reports")
    model, batches = zoo.build("mlp")
    cnn, cnn_batches = zoo.build("cnn-bn")
    x, y = batches[0]
    out = {
        "PruneReport": pk.prune_(copy.deepcopy(model), pk.WandaConfig(sparsity=0.5), data=batches),
        "StructuredReport": pk.prune_(
            copy.deepcopy(cnn),
            pk.MagnitudeConfig(sparsity=0.5, pattern="channel"),
            data=cnn_batches,
        ),
        "QuantizeReport": pk.quantize_(copy.deepcopy(model), pk.RTNConfig(bits=4)),
        "ShareReport": pk.share_weights_(copy.deepcopy(model), pk.KMeansConfig(bits=4)),
        "FactorizeReport": pk.factorize_(copy.deepcopy(model), pk.LowRankConfig(rank_ratio=0.25)),
        "FinetuneReport": pk.finetune_(copy.deepcopy(model), batches, epochs=1, progress=False),
        "DistillReport": pk.distill_(
            copy.deepcopy(model), model, batches, pk.DistillConfig(epochs=1), progress=False
        ),
        "DepthReport": pk.shrink_depth_(_Blocks(), num_layers=2),
        "AccelerateReport": pk.accelerate_(copy.deepcopy(model), (x,)),
        "ExportReport": pk.export_onnx(copy.deepcopy(model).eval(), tmp / "m.onnx", (x,)),
        "ExecuTorchReport": pk.export_executorch(copy.deepcopy(model), tmp / "m.pte", (x,)),
        "RuntimeReport": pk.measure_runtimes(
            model, batches, runtimes=("torch", "onnxruntime"), batch_sizes=(1,), min_run_time=0.01
        ),
        "BitsReport": pk.search_bits(
            copy.deepcopy(model),
            pk.KMeansConfig(),
            lambda m: float((m(x).argmax(1) == y).float().mean()),
            pk.BitsSearchConfig(max_bytes=10**7, bits=(2, 3)),
            progress=False,
        ),
    }
    train, test = _digits()
    recipe = pk.Recipe.from_yaml("steps:\n  - prune: {method: magnitude, sparsity: 0.5}")
    quick = Evaluation(batch_sizes=(1,), min_run_time=0.01, step_latency=False)
    bert = hf_zoo.bert()
    text = [{"input_ids": torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(0))}]
    out["RecoverReport"] = pk.recover_(copy.deepcopy(bert), bert, text, max_steps=2,
                                       progress=False)  # fmt: skip
    out["RecipeReport"] = pk.run_recipe(
        recipe, _mlp(), train, test, out=tmp / "run", evaluation=quick, progress=False
    )
    config = pk.AutoConfig(trials=2, trial_epochs=1, final_epochs=1, final_candidates=1)
    out["AutoReport"] = pk.auto_compress(
        _mlp(), train, test, config, backend="local", progress=False
    )
    return out


def test_every_report_type_is_exported_and_derives_from_the_base():
    names = {n for n in pk.__all__ if n.endswith("Report") and n != "Report"}
    assert names == set(SHAPES)
    for name in names:
        assert issubclass(getattr(pk, name), pk.Report), name


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_json_shape_is_pinned(reports, name):
    report = reports[name]
    assert type(report).__name__ == name
    d = report.to_dict()
    assert sorted(d) == SHAPES[name]
    assert set(d) >= COMMON
    assert isinstance(d["method"], str) and d["method"]
    assert d["config"] is None or isinstance(d["config"], dict)
    assert isinstance(d["seconds"], float) and d["seconds"] >= 0
    assert isinstance(d["skipped"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in d["skipped"].items())


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_text_and_markdown_come_from_the_same_table(reports, name):
    report = reports[name]
    text, markdown = str(report), report.to_markdown()
    assert report.title().split(":")[0] in text
    assert markdown.startswith(f"# {report.title()}")
    table = report.table()
    if table is not None:
        columns, rows = table
        assert f"| {' | '.join(columns)} |" in markdown
        for row in rows:
            assert f"| {' | '.join(row)} |" in markdown
            assert str(row[0]) in text


def test_a_report_json_is_plain_data(reports, tmp_path):
    import json

    for name, report in reports.items():
        text = json.dumps(report.to_dict())
        assert json.loads(text).keys() == report.to_dict().keys(), name


# --------------------------------------------------------------------------- dry run

DRY_RUNS = {
    "unstructured-global": ("mlp", pk.MagnitudeConfig(sparsity=0.7, scope="global")),
    "2:4": ("mlp", pk.MagnitudeConfig(sparsity=0.5, pattern="2:4")),
    "taylor": ("cnn-bn", pk.TaylorConfig(sparsity=0.5)),
    "wanda": ("mlp", pk.WandaConfig(sparsity=0.5)),
    "sparsegpt": ("mlp", pk.SparseGPTConfig(sparsity=0.5)),
    "channel": ("cnn-bn", pk.MagnitudeConfig(sparsity=0.5, pattern="channel")),
    "channel-taylor": ("residual", pk.TaylorConfig(sparsity=0.5, pattern="channel")),
    "head": ("head-attention", pk.MagnitudeConfig(sparsity=0.5, pattern="head")),
}


def _state(model: nn.Module) -> dict[str, object]:
    return {
        "modules": [(n, type(m).__name__, {k: v for k, v in vars(m).items()
                                           if isinstance(v, int | float | str | tuple)})
                    for n, m in model.named_modules()],
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
        "ids": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
        "grads": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
    }  # fmt: skip


def _comparable(report: pk.Report) -> dict[str, object]:
    d = report.to_dict()
    for key in ("seconds", "applied", "max_diff"):
        d.pop(key, None)
    return d


@pytest.mark.parametrize("case", sorted(DRY_RUNS))
def test_dry_run_leaves_the_model_bit_identical_and_reports_what_the_call_does(case):
    name, config = DRY_RUNS[case]
    model, batches = zoo.build(name)
    model.train()  # BatchNorm statistics would move if scoring ran it in training mode
    before = _state(model)
    dry = pk.prune_(model, config, data=batches, dry_run=True)
    after = _state(model)
    assert after["modules"] == before["modules"] and after["ids"] == before["ids"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for key, value in before["tensors"].items():
        assert torch.equal(after["tensors"][key], value), key
    assert all(g is None for g in after["grads"]) and after["training"] == before["training"]
    assert dry.applied is False

    real = pk.prune_(model, config, data=batches)
    assert real.applied is True
    assert _comparable(dry) == _comparable(real)
    if config.structured:
        assert [(g.name, g.before, g.after) for g in dry.groups] == [
            (g.name, g.before, g.after) for g in real.groups
        ]
    else:
        assert dry.per_layer == real.per_layer and dry.sparsity > 0


def test_dry_run_puts_back_gradients_the_user_had():
    model, batches = zoo.build("cnn-bn")
    x, y = batches[0]
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for config in (pk.TaylorConfig(sparsity=0.5), pk.TaylorConfig(sparsity=0.5, pattern="channel")):
        pk.prune_(model, config, data=batches, dry_run=True)
        for p, g in zip(model.parameters(), grads, strict=True):
            assert torch.equal(p.grad, g)


def test_prepare_qat_is_quantize_with_a_qat_config():
    model, _ = zoo.build("mlp")
    twin = copy.deepcopy(model)
    a = pk.prepare_qat_(model, pk.QATConfig())
    b = pk.quantize_(twin, pk.QATConfig())
    assert {**a.to_dict(), "seconds": 0} == {**b.to_dict(), "seconds": 0}
    assert [type(m) for m in model.modules()] == [type(m) for m in twin.modules()]
