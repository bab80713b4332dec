"""``prunekit auto --size-budget``: bits per layer under a size budget (see
:mod:`prunekit.auto.bits`), applied, the shared values fine-tuned, and the result written.

Writes ``DIR/model/``, ``DIR/recipe.yaml`` (the chosen ``layer_bits``, for ``prunekit run``),
``DIR/report.json`` and ``DIR/report.md``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from prunekit.artifact.io import artifact_size, save
from prunekit.auto.bits import BitsSearchConfig, search_bits
from prunekit.auto.config import AutoConfig
from prunekit.cli.common import console, output_dir, print_json, show, write_reports
from prunekit.errors import PrunekitError
from prunekit.measure import compare
from prunekit.measure.accuracy import top1_accuracy
from prunekit.quantize import GPTQConfig, RTNConfig, quantize_
from prunekit.share import KMeansConfig, share_weights_
from prunekit.train import finetune_, teacher_copy

METHODS = {"kmeans": KMeansConfig, "rtn": RTNConfig, "gptq": GPTQConfig}
_RATIO = re.compile(r"^(\d+(?:\.\d+)?)x$")


def parse_budget(text: str, bits: str) -> BitsSearchConfig:
    """``--size-budget`` (``BYTES`` or ``RATIOx``, × smaller than fp32) and ``--bits-range``
    (``LOW:HIGH``) as a :class:`BitsSearchConfig`; PrunekitError naming the bad option."""
    match = _RATIO.match(text.strip().lower())
    if match is None and not text.strip().isdigit():
        raise PrunekitError(
            f"--size-budget must be bytes (16000) or a ratio to fp32 (64x); got {text!r}"
        )
    parts = bits.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise PrunekitError(f"--bits-range must be LOW:HIGH such as 2:8; got {bits!r}")
    widths = (int(parts[0]), int(parts[1]))
    if match is not None:
        return BitsSearchConfig(ratio=float(match.group(1)), bits=widths)
    return BitsSearchConfig(max_bytes=int(text), bits=widths)


def run_bits(
    net: nn.Module,
    train: Any,
    val: Any,
    test: Any,
    *,
    method: str,
    search: BitsSearchConfig,
    config: AutoConfig,
    out: Path,
    spec: str,
    data_name: str,
    source: dict[str, Any],
    json_out: bool,
) -> None:
    """Search, apply, fine-tune (k-means: the shared values, ``config.final_epochs`` at
    ``config.share_lr``, the model as given teaching), compare on ``test`` and write ``out``."""
    base = METHODS[method](seed=config.seed)

    def accuracy(model: nn.Module) -> float:
        return 100 * top1_accuracy(model, val)[0]

    with console.status("measuring each layer at each width…", spinner="dots"):
        report = search_bits(net, base, accuracy, search, data=train, progress=False)
    model = copy.deepcopy(net)
    steps: list[dict[str, Any]] = []
    chosen = {"method": method, **report.chosen.model_dump(mode="json", exclude_defaults=True)}
    if isinstance(report.chosen, KMeansConfig):
        share_weights_(model, report.chosen)
        train_cfg = config.finetune_config(config.final_epochs).model_copy(
            update={"lr": config.share_lr}
        )
        with console.status(f"fine-tuning the shared values ({config.final_epochs} epochs)…"):
            finetune_(model, train, train_cfg, teacher=teacher_copy(net), progress=False)
        steps = [{"share": chosen}, {"finetune": {**train_cfg.to_dict(), "distill": True}}]
    else:
        quantize_(model, report.chosen, train)
        steps = [{"quantize": chosen}]
    model.eval()
    size = artifact_size(model)
    with console.status("measuring before/after (accuracy, bytes, MACs, latency)…"):
        comparison = compare(net, model, test)
    payload = {
        "model": spec,
        "data": data_name,
        **report.to_dict(),
        "bytes": size,
        "within_budget": size <= report.budget_bytes,
        "comparison": comparison.to_dict(),
    }
    verdict = (
        f"saved {size:,} bytes: {'within' if size <= report.budget_bytes else 'over'} the "
        f"budget of {report.budget_bytes:,}"
    )
    with output_dir(out) as staged:
        save(model, staged / "model", source={**source, "auto": {"layer_bits": report.layer_bits}})
        recipe = {"steps": [*steps, {"measure": {}}]}
        (staged / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        markdown = f"{report.to_markdown()}\n\n{verdict}\n\n{comparison.to_markdown()}"
        write_reports(staged, payload, markdown)
    if json_out:
        print_json(payload)
    else:
        show(str(report))
        show(verdict)
        show(str(comparison))
        console.print(f"wrote {out / 'model'}, recipe.yaml, report.*")
