"""shrink_depth_: shallower transformers initialised from the teacher's blocks."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers
from torch import nn

import prunekit as pk
from prunekit.calibrate import capture_block_inputs, find_blocks, next_call, run_block
from prunekit.distill.depth import DepthReport, depth_plan, shrink_depth_
from prunekit.errors import PrunekitError
from prunekit.surgery.shrink import structure_record
from tests import hf_zoo

LAYERS = 6


def _bert() -> nn.Module:
    return hf_zoo.bert(num_attention_heads=4, layers=LAYERS)


def _gpt2() -> nn.Module:
    return hf_zoo.gpt2(n_head=4, layers=LAYERS)


def _llama() -> nn.Module:
    return hf_zoo.llama_gqa(layers=LAYERS)


def _qwen2() -> nn.Module:
    """Sliding-window attention on the last layers: ``layer_types`` differs per layer."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        use_sliding_window=True, sliding_window=4, max_window_layers=3,
    )  # fmt: skip
    return transformers.Qwen2ForCausalLM(config).eval()


MODELS = {"bert": _bert, "gpt2": _gpt2, "llama": _llama, "qwen2": _qwen2}
DECODERS = ("gpt2", "llama", "qwen2")


def _inputs(name: str) -> dict[str, torch.Tensor]:
    return hf_zoo.text_inputs(pad=name not in DECODERS)


def _out(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _by_hand(teacher: nn.Module, kept: list[int]) -> nn.Module:
    """The shallow model built the obvious way: a fresh model from a config with fewer layers,
    given the teacher's weights with the kept blocks renumbered."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [teacher.config.layer_types[i] for i in kept]
    fresh = type(teacher)(config).eval()
    prefix = find_blocks(teacher)[0][0].rpartition(".")[0] + "."
    state = {}
    for name, t in teacher.state_dict().items():
        if name.startswith(prefix):
            index, _, rest = name[len(prefix) :].partition(".")
            if int(index) not in kept:
                continue
            name = f"{prefix}{kept.index(int(index))}.{rest}"
        state[name] = t
    fresh.load_state_dict(state, strict=True)
    return fresh


def test_plan_spacing_matches_distilbert() -> None:
    # DistilBERT's extraction script kept BERT-base layers 0, 2, 4, 7, 9, 11.
    assert depth_plan(12, num_layers=6) == [0, 2, 4, 7, 9, 11]
    assert depth_plan(12, every=2) == [0, 2, 4, 6, 8, 10]
    assert depth_plan(6, num_layers=2) == [0, 5]
    assert depth_plan(6, num_layers=1) == [0]
    assert depth_plan(6, num_layers=6) == list(range(6))
    assert depth_plan(6, [1, 4]) == [1, 4]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shrink_equals_model_built_with_fewer_layers(name: str) -> None:
    teacher = MODELS[name]()
    student = copy.deepcopy(teacher)
    inputs = _inputs(name)
    report = shrink_depth_(student, num_layers=3)
    assert isinstance(report, DepthReport)
    assert report.kept == [0, 3, 5] and report.num_layers_before == LAYERS
    assert student.config.num_hidden_layers == 3
    assert len(find_blocks(student)) == 3
    assert report.params_after < report.params_before
    assert report.params_after == sum(p.numel() for p in student.parameters())
    expected = _out(_by_hand(teacher, [0, 3, 5]), inputs)
    torch.testing.assert_close(_out(student, inputs), expected, rtol=0, atol=0)
    if name == "qwen2":
        assert student.config.layer_types == [teacher.config.layer_types[i] for i in [0, 3, 5]]
        assert len(set(student.config.layer_types)) == 2


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_blocks_run_in_sequence(name: str) -> None:
    """The shallow model's last block output is the teacher's kept blocks run one after another
    on the teacher's first block input."""
    teacher = MODELS[name]()
    student = copy.deepcopy(teacher)
    inputs = _inputs(name)
    kept = [1, 2, 4]
    shrink_depth_(student, kept)
    blocks = [b for _, b in find_blocks(teacher)]
    (call,) = capture_block_inputs(teacher, blocks[0], [inputs], None)
    with torch.no_grad():
        for i in kept:
            hidden = run_block(blocks[i], call)
            call = next_call(call, hidden)
    seen = []
    last = find_blocks(student)[-1][1]
    handle = last.register_forward_hook(
        lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        _out(student, inputs)
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], hidden, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", DECODERS)
def test_generate_with_cache_matches_without(name: str) -> None:
    """Cached generation reads the renumbered ``layer_idx``: it must agree with recomputing."""
    model = MODELS[name]()
    shrink_depth_(model, every=2)
    attn = [m for m in model.modules() if getattr(m, "layer_idx", None) is not None]
    assert sorted({m.layer_idx for m in attn}) == [0, 1, 2]
    prompt = hf_zoo.text_inputs(pad=False)
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = model.generate(**prompt, use_cache=True, **kwargs)
        fresh = model.generate(**prompt, use_cache=False, **kwargs)
    assert cached.shape == (2, 8 + 6)
    assert torch.equal(cached, fresh)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_and_from_pretrained(name: str, tmp_path) -> None:
    model = MODELS[name]()
    inputs = _inputs(name)
    shrink_depth_(model, [0, 2, 5])
    expected = _out(model, inputs)
    pk.save(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["num_hidden_layers" if "num_hidden_layers" in config else "n_layer"] == 3
    torch.testing.assert_close(_out(pk.load(tmp_path / "m"), inputs), expected, rtol=0, atol=0)
    auto = (
        transformers.AutoModelForCausalLM if name in DECODERS else transformers.AutoModel
    ).from_pretrained(tmp_path / "m")
    torch.testing.assert_close(_out(auto.eval(), inputs), expected, rtol=0, atol=0)


def test_after_structured_pruning_save_load(tmp_path) -> None:
    """Structure records name modules by block index; after shrinking they must follow."""
    model = _bert()
    inputs = _inputs("bert")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"), example_inputs=inputs)
    record = structure_record(model)
    shrink_depth_(model, [1, 3, 4])
    moved = structure_record(model)
    assert len(moved) == len(record) // 2
    assert {e["module"].split(".")[2] for e in moved} == {"0", "1", "2"}
    expected = _out(model, inputs)
    pk.save(model, tmp_path / "m")
    torch.testing.assert_close(_out(pk.load(tmp_path / "m"), inputs), expected, rtol=0, atol=0)


class _Stack(nn.Module):
    """A plain PyTorch transformer (no Hugging Face config)."""

    def __init__(self, depth: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 16)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            for _ in range(depth)
        )
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(1))


def test_plain_pytorch_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = _Stack().eval()
    ids = torch.randint(0, 16, (2, 5))
    with torch.no_grad():
        h = model.embed(ids)
        for i in (1, 3):
            h = model.blocks[i](h)
        expected = model.head(h.mean(1))
    report = shrink_depth_(model, [1, 3])
    assert report.blocks == "blocks" and report.config == {}
    with torch.no_grad():
        torch.testing.assert_close(model(ids), expected, rtol=0, atol=0)
    pk.save(model, tmp_path / "m")
    loaded = pk.load(tmp_path / "m", model=_Stack(depth=2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ([[]], {}, "at least one"),
        ([[0, 6]], {}, r"\[6\] are out of range.*6 blocks"),
        ([[-1]], {}, "out of range"),
        ([[1, 1]], {}, "must not repeat"),
        ([[3, 1]], {}, "increasing order"),
        ([[0.5]], {}, "list of block indices"),
        ([[0, 2]], {"every": 2}, "exactly one of keep, every or num_layers; got keep, every"),
        ([], {}, "exactly one.*got none"),
        ([], {"every": 0}, "every must be a whole number ≥ 1; got 0"),
        ([], {"num_layers": 7}, r"num_layers must be a whole number in \[1, 6\].*got 7"),
    ],
)
def test_errors_leave_model_unchanged(args, kwargs, match) -> None:
    model = _gpt2()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError, match=match):
        shrink_depth_(model, *args, **kwargs)
    assert model.config.n_layer == LAYERS and len(model.transformer.h) == LAYERS
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_no_blocks() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(PrunekitError, match="Sequential has no list of repeated blocks"):
        shrink_depth_(model, every=2)


def test_config_that_cannot_express_the_blocks_is_refused() -> None:
    # T5's first block alone holds the relative position bias.
    model, inputs = hf_zoo.ZOO["t5_encoder"]()
    before = _out(model, inputs)
    with pytest.raises(PrunekitError, match="keep block 0"):
        shrink_depth_(model, [1])
    assert len(model.encoder.block) == 2 and model.config.num_layers == 2
    torch.testing.assert_close(_out(model, inputs), before, rtol=0, atol=0)
    shrink_depth_(model, [0])
    assert model.config.num_layers == 1


def test_gpt2_inverse_layer_scaling_refuses_moving_blocks() -> None:
    model = _gpt2()
    model.config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(PrunekitError, match="scale_attn_by_inverse_layer_idx"):
        shrink_depth_(model, [0, 2])
    assert shrink_depth_(model, [0, 1]).kept == [0, 1]


def test_minilm_six_to_three_layers(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from prunekit.models.minilm import load_minilm

    teacher = load_minilm()
    student = copy.deepcopy(teacher)
    # Shrinking is bookkeeping: no forward pass, and the architectures it checks the config
    # against are built on the meta device (no 22M-parameter allocation or initialisation).
    forwards, built_on = [], []
    hook = nn.modules.module.register_module_forward_pre_hook(lambda m, _: forwards.append(m))
    cls = type(student)
    init = cls.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built_on.append({p.device.type for p in self.parameters()})

    with monkeypatch.context() as m:
        m.setattr(cls, "__init__", spy)
        report = shrink_depth_(student, num_layers=3)
    hook.remove()
    assert forwards == []
    assert len(built_on) <= 3 and all(d == {"meta"} for d in built_on)
    assert report.kept == [0, 3, 5] and student.config.num_hidden_layers == 3
    assert report.params_before > 22_000_000
    # Each BERT layer of width 384 (FFN 1536) holds 1,774,464 parameters.
    assert report.params_before - report.params_after == 3 * 1_774_464
    ids = torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    expected = _out(student, inputs)
    torch.testing.assert_close(_out(_by_hand(teacher, [0, 3, 5]), inputs), expected)
    pk.save(student, tmp_path / "m")
    torch.testing.assert_close(_out(pk.load(tmp_path / "m"), inputs), expected, rtol=0, atol=0)
