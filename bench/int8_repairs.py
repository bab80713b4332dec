"""Post-training static int8 repairs on CPU CNNs: plain min/max vs cross-layer equalization,
bias correction and AdaRound (Int8StaticConfig's ``equalize``, ``bias_correction``,
``rounding``), on the built-in MobileNetV2-style net (depthwise 3×3) and VGG-BN.

  accuracy   top-1 on the Fashion-MNIST test split (10,000 images); agreement: the fraction
             of test images whose int8 prediction equals the fp32 model's; logit SQNR: how
             close the int8 logits are to fp32's (more sensitive than accuracy).
  latency    prunekit.measure.latency.time_models, fp32 and every int8 variant interleaved,
             batch 1 and 64, channels_last, torch's default threads; reported as ratios.
  seconds    wall time of quantize_ (calibration, repairs, conversion).

Every variant calibrates on the same 256 training images (the default ``num_samples``).

    python -m bench.int8_repairs [--models mobilenet-v2 vgg-bn] [--iterations 500]
                                 [--min-run-time 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any

import torch
from torch import nn

from bench.common import machine, write
from prunekit.data import load_data
from prunekit.measure.latency import time_models
from prunekit.measure.render import markdown_table
from prunekit.models.registry import model_info
from prunekit.quantize import Int8StaticConfig, quantize_
from prunekit.quantize.grid import sqnr_db
from prunekit.specs import load_model

CALIBRATION = 256  # images, Int8StaticConfig's default num_samples
VARIANTS: dict[str, dict[str, Any]] = {
    "int8 min/max": {},
    "int8 + CLE": {"equalize": True},
    "int8 + CLE + bias corr.": {"equalize": True, "bias_correction": True},
    "int8 + AdaRound": {"rounding": "adaround"},
    "int8 + CLE + bias corr. + AdaRound": {
        "equalize": True,
        "bias_correction": True,
        "rounding": "adaround",
    },
}


@torch.inference_mode()
def predictions(model: nn.Module, test: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, classes]`` and labels ``[N]`` over the whole test split."""
    model.eval()
    logits, labels = [], []
    for x, y in test:
        logits.append(model(x))
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1) == labels).float().mean())


def calibration(data: Any, seed: int) -> list[Any]:
    """``CALIBRATION`` training images in batches of 64, drawn with ``seed``; a list, so every
    variant reads the same images (each pass over a loader draws a new order)."""
    batches = data.loader("train", batch_size=64, seed=seed)
    return [b for _, b in zip(range(CALIBRATION // 64), batches, strict=False)]


def noise_floor(name: str, seeds: range) -> list[float]:
    """Test accuracy of plain min/max int8 calibrated on other draws of training images: how
    much accuracy moves with the calibration set alone."""
    dense, _ = load_model(f"builtin:{name}")
    data = load_data(model_info(name).data_spec())
    test = data.loader("test", batch_size=500)
    accuracies = []
    for seed in seeds:
        int8 = copy.deepcopy(dense)
        quantize_(int8, Int8StaticConfig(), data=calibration(data, seed))
        accuracies.append(accuracy(*predictions(int8, test)))
    return accuracies


def bench_model(name: str, iterations: int, min_run_time: float) -> list[dict[str, Any]]:
    dense, _ = load_model(f"builtin:{name}")
    data = load_data(model_info(name).data_spec())
    calib = calibration(data, seed=0)
    test = data.loader("test", batch_size=500)
    reference, labels = predictions(dense, test)
    rows: list[dict[str, Any]] = [
        {"variant": "fp32", "accuracy": accuracy(reference, labels), "model": name}
    ]
    models: list[nn.Module] = [dense]
    for variant, fields in VARIANTS.items():
        config = Int8StaticConfig(**fields, rounding_iterations=iterations)
        int8 = copy.deepcopy(dense)
        start = time.perf_counter()
        report = quantize_(int8, config, data=calib)
        seconds = time.perf_counter() - start
        logits, _ = predictions(int8, test)
        agree = logits.argmax(dim=-1) == reference.argmax(dim=-1)
        rows.append(
            {
                "model": name,
                "variant": variant,
                "config": config.to_dict(),
                "accuracy": accuracy(logits, labels),
                "agreement": float(agree.float().mean()),
                "sqnr_db": sqnr_db(reference, logits),
                "seconds": seconds,
                "repairs": {
                    region: {k: v for k, v in stats.items() if not k.startswith("error")}
                    for region, stats in report.extra.get("repairs", {}).items()
                },
            }
        )
        models.append(int8)
        print(f"  {name} {variant}: {rows[-1]['accuracy']:.4f} ({seconds:.0f} s)", flush=True)
    x = next(iter(test))[0]
    latencies = time_models(models, x, batch_sizes=(1, 64), min_run_time=min_run_time)
    for row, latency in zip(rows, latencies, strict=True):
        row["ms"] = latency.median_ms
        row["speedup"] = {b: latencies[0].median_ms[b] / latency.median_ms[b] for b in (1, 64)}
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    fp32 = {r["model"]: r["accuracy"] for r in rows if r["variant"] == "fp32"}
    body = [
        [
            r["model"],
            r["variant"],
            f"{r['accuracy']:.4f}",
            f"{100 * (r['accuracy'] - fp32[r['model']]):+.2f}",
            f"{r['agreement']:.4f}" if "agreement" in r else "",
            f"{r['sqnr_db']:.1f}" if "sqnr_db" in r else "",
            f"{r['ms'][1]:.2f}",
            f"{r['speedup'][1]:.2f}×",
            f"{r['ms'][64]:.1f}",
            f"{r['speedup'][64]:.2f}×",
            f"{r['seconds']:.0f}" if "seconds" in r else "",
        ]
        for r in rows
    ]
    columns = [
        "model",
        "variant",
        "test acc",
        "Δ points",
        "agrees with fp32",
        "logit SQNR dB",
        "b1 ms",
        "vs fp32 b1",
        "b64 ms",
        "vs fp32 b64",
        "quantize s",
    ]
    return markdown_table(columns, body)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet-v2", "vgg-bn"])
    parser.add_argument(
        "--iterations",
        type=int,
        default=Int8StaticConfig().rounding_iterations,
        help="AdaRound steps per layer",
    )
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows, floors = [], {}
    for name in args.models:
        rows += bench_model(name, args.iterations, args.min_run_time)
        floors[name] = noise_floor(name, range(1, 4))
    spread = "; ".join(f"{name} {min(accs):.4f}–{max(accs):.4f}" for name, accs in floors.items())
    info = machine()
    md = (
        "# Static int8 repairs: min/max vs CLE, bias correction, AdaRound (torch.ao FX, x86)\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, shared with other jobs while this ran "
        f"(load average {os.getloadavg()[0]:.1f}), torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}; OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}.\n"
        "Calibration: the same 256 Fashion-MNIST training images for every variant; AdaRound "
        f"{args.iterations} steps per layer. Accuracy: the 10,000 test images; Δ points against "
        "fp32; agreement: test images whose prediction equals fp32's; logit SQNR: fp32 logits "
        "against the int8 model's over the test split (higher: closer to fp32). Latency: median "
        "ms, fp32 "
        "and all int8 variants interleaved (prunekit.measure.latency.time_models, "
        "channels_last); compare the ratios, not the absolute times (shared machine); the int8 "
        "variants run the same kernels, so their differences are the machine's noise. "
        "quantize s: wall time of quantize_.\n\n"
        f"{table(rows)}\n\n"
        "Noise floor: plain min/max int8 calibrated on three other draws of 256 training "
        f"images reaches test accuracy {spread}.\n"
    )
    payload = {
        "machine": info,
        "iterations": args.iterations,
        "results": rows,
        "noise_floor": floors,
    }
    write("int8_repairs", payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
