"""Static int8 for CPU CNNs with torch.ao's FX graph mode (the library does the work).

Each region (a traceable submodule taking one tensor) is traced, BatchNorm folded into the
convolutions and ReLU fused by ``prepare_fx`` with the x86 backend's default mapping (int8
weights per output channel, uint8 activations with histogram-calibrated ranges), calibrated on
its own inputs recorded from ``data``, and turned by ``convert_fx`` into a graph of quantized
kernels that is swapped in for the region. Layers named in ``ignore`` stay in that graph as they
were, under their own names, fused with nothing (prunekit.quantize.unfused).

Saving: the converted graph keeps quantized tensors and packed kernels, which safetensors cannot
hold. :class:`StaticInt8Region` therefore hides the graph from ``state_dict`` and exposes its
state as plain tensors instead (int8 values, float64 scales, int64 zero points); its swap builder
converts the region again from the original submodule (uncalibrated, so with placeholder
ranges) and ``load_state_dict`` then puts the saved values back, scales included.

Repairs (``equalize``, ``bias_correction``, ``rounding="adaround"``; prunekit.quantize.repairs)
convert a BN-folded trace of the region instead, equalized first when asked, then change the
converted layers' int8 weights and biases in place; the swap record says ``folded`` so that
loading rebuilds the same graph.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import calibration_forward
from prunekit.data.batches import split_batch, take_samples
from prunekit.errors import PrunekitError
from prunekit.quantize.config import Int8StaticConfig
from prunekit.quantize.grid import sqnr_db
from prunekit.quantize.repairs import RepairStats, float_copy, fold_batchnorm, repair_layers_
from prunekit.quantize.report import LayerQuant, QuantizeReport, state_bytes
from prunekit.quantize.select import swap_all_
from prunekit.quantize.unfused import Kept, hide_, restore_
from prunekit.surgery.swaps import register_swap
from prunekit.targets import select_layers

STATIC_SWAP = "int8-static"
# Elements of one input sample a region is rebuilt on (an image of 4096×4096 RGB is 50M).
MAX_EXAMPLE_NUMEL = 1 << 26
LAYER_KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class StaticInt8Region(nn.Module):
    """A region converted to int8 by torch.ao FX; float tensor in, float tensor out.

    ``state_dict`` holds plain tensors: for every quantized tensor ``K`` of the graph,
    ``K.int8`` (its int8/uint8 values), ``K.scales``/``K.zero_points`` (per channel) or
    ``K.scale``/``K.zero_point`` (per tensor); other tensors as they are.
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        # Not registered as a child: its own state_dict has quantized tensors (see the module
        # docstring); it is eval-only and CPU-only, so nothing needs to recurse into it.
        object.__setattr__(self, "graph", graph)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def _tensors(self, attr: str) -> torch.Tensor:
        found = []
        for m in self.graph.modules():
            t = getattr(m, attr, None)
            if callable(t) and not isinstance(t, nn.Module):  # quantized modules: weight()
                t = t()
            if isinstance(t, torch.Tensor):
                found.append((t.dequantize() if t.is_quantized else t.detach()).flatten())
        return torch.cat(found) if found else torch.zeros(0)

    @property
    def weight(self) -> torch.Tensor:
        """Every layer's weight in the region, dequantized and flattened into one vector (BN
        folded in): what counting parameters and non-zeros reads."""
        return self._tensors("weight")

    @property
    def bias(self) -> torch.Tensor:
        """Every layer's bias in the region, flattened into one vector."""
        return self._tensors("bias")

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for key, value in flatten_state(self.graph.state_dict()).items():
            destination[prefix + key] = value

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        template = self.graph.state_dict()
        expected = set(flatten_state(template))
        mine = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        missing = sorted(expected - set(mine))
        missing_keys.extend(prefix + k for k in missing)
        if strict:
            unexpected_keys.extend(prefix + k for k in sorted(set(mine) - expected))
        if missing:
            return
        state = OrderedDict(unflatten_state(mine, template))
        # Quantized modules read their format version from the metadata (older ones are
        # converted on load); the template's is the current one.
        state._metadata = getattr(template, "_metadata", {})  # type: ignore[attr-defined]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.graph.load_state_dict(state)

    def extra_repr(self) -> str:
        kinds = sorted({type(m).__name__ for m in self.graph.modules() if m is not self.graph})
        return f"int8 static (torch.ao FX, x86): {', '.join(kinds)}"


def flatten_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A converted graph's state_dict as plain tensors (see :class:`StaticInt8Region`)."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, tuple):  # a quantized linear's packed (weight, bias)
            for i, item in enumerate(value):
                if isinstance(item, torch.Tensor):
                    flat.update(_flat_tensor(f"{key}.{i}", item))
        elif isinstance(value, torch.Tensor):
            flat.update(_flat_tensor(key, value))
    return flat


def _flat_tensor(key: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
    t = t.detach()
    if not t.is_quantized:
        return {key: t}
    if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        assert t.q_per_channel_axis() == 0, "weights are quantized per output channel"
        return {
            f"{key}.int8": t.int_repr(),
            f"{key}.scales": t.q_per_channel_scales().double(),
            f"{key}.zero_points": t.q_per_channel_zero_points().long(),
        }
    return {
        f"{key}.int8": t.int_repr(),
        f"{key}.scale": torch.tensor(t.q_scale(), dtype=torch.float64),
        f"{key}.zero_point": torch.tensor(t.q_zero_point(), dtype=torch.int64),
    }


def unflatten_state(flat: dict[str, torch.Tensor], template: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_state`, shaped like ``template`` (a fresh graph's state)."""
    state: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, tuple):
            state[key] = tuple(
                _unflat_tensor(f"{key}.{i}", item, flat) if isinstance(item, torch.Tensor) else item
                for i, item in enumerate(value)
            )
        elif isinstance(value, torch.Tensor):
            state[key] = _unflat_tensor(key, value, flat)
        else:
            state[key] = value
    return state


def _unflat_tensor(key: str, like: torch.Tensor, flat: dict[str, torch.Tensor]) -> torch.Tensor:
    if not like.is_quantized:
        return flat[key]
    values = flat[f"{key}.int8"]
    if like.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return torch._make_per_channel_quantized_tensor(
            values, flat[f"{key}.scales"], flat[f"{key}.zero_points"], 0
        )
    return torch._make_per_tensor_quantized_tensor(
        values, float(flat[f"{key}.scale"]), int(flat[f"{key}.zero_point"])
    )


def convert_region(region: nn.Module, inputs: list[torch.Tensor], ignore: list[str]) -> nn.Module:
    """A copy of ``region`` prepared, calibrated on ``inputs`` and converted by torch.ao FX.

    ignore: names (relative to ``region``) of layers inside it kept in float as they are: same
    name, same weights, nothing fused into them (see prunekit.quantize.unfused).
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    root = copy.deepcopy(region).eval()
    leaf = not list(root.children())
    if leaf:  # a bare conv/linear traces to a functional call; wrapped it stays a module
        root = nn.Sequential(root)
    mapping = get_default_qconfig_mapping("x86")
    for name in ignore:
        mapping.set_module_name(name, None)
    hide_(root, ignore)  # else prepare_fx fuses them with their BatchNorm and ReLU
    custom = PrepareCustomConfig().set_non_traceable_module_classes([Kept])
    with warnings.catch_warnings():
        # torch deprecates torch.ao quantization in favour of torchao, whose int8 CPU path ran
        # ≈18× slower here; the FX flow and its kernels are what we want.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        prepared = prepare_fx(root, mapping, (inputs[0],), prepare_custom_config=custom)
        with torch.no_grad():
            for x in inputs:
                prepared(x)
        graph = convert_fx(prepared)
    restore_(graph, ignore)
    return graph


def _regions(model: nn.Module, config: Int8StaticConfig) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if config.targets is None:
        chosen = {
            n: m
            for n, m in model.named_children()
            if any(isinstance(s, LAYER_KINDS) for s in m.modules())
        }
        if not chosen:
            raise PrunekitError(
                f"{config.method}: the model has no direct child holding a conv or linear layer; "
                f"name the regions to convert with targets=[...]"
            )
    else:
        chosen = {}
        for sel in config.targets:
            hits = {n: m for n, m in modules.items() if n and _matches_name(sel, n)}
            if not hits:
                raise PrunekitError(
                    f"targets: {sel!r} matches no submodule; {config.method} converts regions "
                    f"named like {[n for n, _ in model.named_children()][:8]}"
                )
            chosen.update(hits)
    names = sorted(chosen)
    for a in names:
        for b in names:
            if b.startswith(f"{a}."):
                raise PrunekitError(f"targets: region {b!r} lies inside region {a!r}; keep one")
    for name, region in chosen.items():
        if any(p.device.type != "cpu" for p in region.parameters()):
            raise PrunekitError(
                f"{config.method}: region {name!r} is not on the CPU; torch's int8 kernels are "
                f"CPU-only: move the model to the CPU first"
            )
    return chosen


def _matches_name(selector: str, name: str) -> bool:
    import re

    if selector.startswith("re:"):
        return re.search(selector[3:], name) is not None
    return selector == name


def _ignored(model: nn.Module, config: Int8StaticConfig) -> set[str]:
    every = select_layers(model, kinds=LAYER_KINDS)
    if not config.ignore:
        return set()
    kept = select_layers(model, None, config.ignore, kinds=LAYER_KINDS)
    return set(every) - set(kept)


@torch.no_grad()
def _record_inputs(
    model: nn.Module, regions: dict[str, nn.Module], data: Iterable[Any], num_samples: int
) -> dict[str, list[torch.Tensor]]:
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in regions}
    bad: list[str] = []

    def hook(name: str):
        def record(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
                inputs[name].append(args[0].detach().clone())
            else:
                bad.append(name)

        return record

    handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in regions.items()]
    was_training = model.training
    model.eval()
    try:
        for batch in take_samples(data, num_samples):
            calibration_forward(model, split_batch(batch)[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if bad:
        raise PrunekitError(
            f"targets: region {bad[0]!r} is not called with exactly one tensor; static int8 "
            f"regions take one tensor input, choose other submodules with targets=[...]"
        )
    never = [n for n, xs in inputs.items() if not xs]
    if never:
        raise PrunekitError(
            f"targets: regions {never[:3]} never ran on the calibration data; leave them out"
        )
    return inputs


def int8_static_(
    model: nn.Module, config: Int8StaticConfig, data: Iterable[Any] | None
) -> QuantizeReport:
    """Convert the regions of ``model`` to static int8 in place; see the module docstring."""
    assert data is not None, "quantize_ checks that data is given"
    regions = _regions(model, config)
    ignored = _ignored(model, config)
    for name in [n for n in regions if n in ignored]:
        del regions[name]  # an ignored layer that is a region by itself
    if not regions:
        raise PrunekitError(f"{config.method}: every region is ignored; nothing to convert")
    inputs = _record_inputs(model, regions, data, config.num_samples)
    new: dict[str, StaticInt8Region] = {}
    args: dict[str, dict[str, Any]] = {}
    rows: list[LayerQuant] = []
    repairs: dict[str, dict[str, Any]] = {}
    skipped = {n: "kept in float (ignore)" for n in sorted(ignored)}
    for name, region in regions.items():
        mine = sorted(n[len(name) + 1 :] for n in ignored if n.startswith(f"{name}."))
        work: nn.Module = region
        stats: RepairStats | None = None
        try:
            if config.repaired:
                work, stats = float_copy(region, mine, config.equalize)
            graph = convert_region(work, inputs[name], mine)
        except Exception as e:
            raise PrunekitError(
                f"targets: region {name!r} ({type(region).__name__}) cannot be converted by "
                f"torch.ao FX ({type(e).__name__}: {e}); choose traceable submodules with "
                f"targets=[...] or use int8-dynamic"
            ) from e
        if stats is not None:
            assert isinstance(work, torch.fx.GraphModule)
            repair_layers_(graph, work, inputs[name], config, stats)
            repairs[name] = asdict(stats)
        new[name] = StaticInt8Region(graph)
        x = inputs[name][0]
        was_training = region.training
        with torch.no_grad():
            reference = region.eval()(x)
            sqnr = sqnr_db(reference, new[name](x))
        region.train(was_training)
        args[name] = {"input_shape": list(x.shape[1:]), "ignore": mine}
        if stats is not None:
            args[name]["folded"] = True
        rows.append(
            LayerQuant(
                name,
                type(region).__name__,
                tuple(x.shape[1:]),
                8,
                None,
                sqnr,
                state_bytes(region),
                state_bytes(new[name]),
            )
        )
    swap_all_(model, dict(new), STATIC_SWAP, args)
    note: dict[str, Any] = {"sqnr": "of each region's output on its first calibration batch"}
    if repairs:
        note["repairs"] = repairs
    return QuantizeReport(
        method=config.method, config=config.to_dict(), layers=rows, skipped=skipped, extra=note
    )


def _build_static(region: nn.Module, args: dict[str, Any]) -> nn.Module:
    # The region is rebuilt by converting it again on a zero example of its input shape: a shape
    # from a damaged manifest must not size that example beyond any real input.
    shape, ignore = args.get("input_shape"), args.get("ignore", [])
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 8
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
        or math.prod(shape) > MAX_EXAMPLE_NUMEL
    ):
        raise PrunekitError(
            f"the swap record's input_shape {str(shape)[:60]} is not 1 to 8 positive sizes of "
            f"at most {MAX_EXAMPLE_NUMEL:,} elements; the artifact is corrupted"
        )
    if not isinstance(ignore, list) or not all(isinstance(n, str) for n in ignore):
        raise PrunekitError("the swap record's ignore must be a list of layer names")
    folded = args.get("folded", False)
    if not isinstance(folded, bool):
        raise PrunekitError("the swap record's folded must be true or false")
    if any(isinstance(m, StaticInt8Region) for m in region.modules()):
        # Converting a converted region again traces its graph module: it loads, then its first
        # forward fails.
        raise PrunekitError(
            "the swap record converts a region to int8-static twice; the artifact is corrupted"
        )
    example = torch.zeros(1, *shape)
    if folded:  # a repaired region was converted from its BN-folded trace: same graph, same keys
        region = fold_batchnorm(region, ignore)
    return StaticInt8Region(convert_region(region, [example], ignore))


register_swap(STATIC_SWAP, _build_static)
