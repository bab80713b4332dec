"""``builtin:gpt-tiny``: a GPT-2-style causal LM trained from scratch on the fortunes corpus.

No pretrained causal LM (nor GPT-2's vocabulary) is available offline, so the first use trains
one: a byte-level BPE tokenizer on the corpus's train split, then a 4-layer, 128-wide
``GPT2LMHeadModel`` (1.35M parameters, tied embeddings, every Linear/Conv1D in-width a multiple
of 8 so N:M patterns apply) on random 128-token windows of the train split, AdamW with warm-up
+ cosine, seeded — a few minutes on two CPU cores. The budget is set so that the blocks carry
the model: a 256-wide model trained for 200 steps reached perplexity 418 (unigram: 965), and
pruning 70% of its block weights moved that by 1%, so it could not tell pruning methods apart;
this recipe reaches 156 on the held-out split. The result is cached as a Hugging Face
folder (``config.json``, ``model.safetensors``, tokenizer files, ``prunekit.json``), so
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load it too.

transformers and tokenizers (the ``hf`` extra) are imported only when gpt-tiny is used.
The corpus splits are written beside the model, under ``<cache>/data/fortunes/``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from prunekit.atomic import staged_dir
from prunekit.data.corpus import PACKAGE, corpus_files
from prunekit.data.text import token_stream
from prunekit.errors import PrunekitError
from prunekit.models.hf import hf_source, load_hf_model, load_tokenizer, transformers_module
from prunekit.models.paths import default_cache_dir, prunekit_version

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2LMHeadModel

logger = logging.getLogger(__name__)

NAME = "gpt-tiny"
EOT = "<|endoftext|>"
RECORD = "prunekit.json"


@dataclass(frozen=True)
class GPTTinyRecipe:
    """The tokenizer, architecture and training budget of gpt-tiny; the cache is keyed on it."""

    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    seq_len: int = 128
    batch_size: int = 16
    max_steps: int = 1000
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


RECIPE = GPTTinyRecipe()


def gpt_tiny_config(recipe: GPTTinyRecipe = RECIPE) -> GPT2Config:
    """The GPT2Config of gpt-tiny: no dropout (training sees the data less than once)."""
    return transformers_module().GPT2Config(
        vocab_size=recipe.vocab_size,
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,  # EOT is the tokenizer's first (and only) special token
        eos_token_id=0,
        tie_word_embeddings=True,
    )


def build_gpt_tiny(**overrides: Any) -> GPT2LMHeadModel:
    """An untrained gpt-tiny; ``overrides`` replace fields of the recipe (``n_layer=2``, …).

    Input ``input_ids: [B, T]`` (T ≤ n_positions) → ``logits: [B, T, vocab_size]``.
    """
    return _build(replace(RECIPE, **overrides))


def _build(recipe: GPTTinyRecipe) -> GPT2LMHeadModel:
    return transformers_module().GPT2LMHeadModel(gpt_tiny_config(recipe))


def train_tokenizer(lines: list[str], vocab_size: int = RECIPE.vocab_size) -> Any:
    """A byte-level BPE tokenizer trained on ``lines``, with ``<|endoftext|>`` as id 0.

    Returns a ``transformers.PreTrainedTokenizerFast``; byte-level, so ``decode(encode(x)) == x``.
    """
    transformers = transformers_module()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise PrunekitError(f"vocab_size must be ≥ 257 (256 bytes + EOT); got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(lines, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=RECIPE.n_positions,
        clean_up_tokenization_spaces=False,
    )


def windows(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The non-overlapping ``[num_windows, seq_len]`` windows of a token stream (tail dropped),
    as ``text:FILE`` data gives them in stream mode."""
    count = stream.numel() // seq_len
    return stream[: count * seq_len].view(count, seq_len)


def unigram_perplexity(train: torch.Tensor, tokens: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of add-one-smoothed ``train`` token frequencies on the positions a causal LM
    predicts in ``tokens: [num_windows, seq_len]`` (all but each window's first): the baseline
    a language model must beat."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    log_p = (counts / counts.sum()).log()
    return math.exp(-float(log_p[tokens[:, 1:].reshape(-1)].mean()))


def gpt_tiny_dir(cache_dir: str | Path | None = None) -> Path:
    """The cached Hugging Face folder of gpt-tiny (it may not exist yet)."""

    return Path(cache_dir or default_cache_dir()) / "models" / NAME


def gpt_tiny_corpus(cache_dir: str | Path | None = None) -> dict[str, Path]:
    """The corpus split files ``{"train", "calib", "eval"}`` (one sample per line), written
    into the cache on first use; pass them as ``text:FILE`` data specs."""

    return corpus_files(Path(cache_dir or default_cache_dir()) / "data" / PACKAGE)


def pretrained_gpt_tiny(
    cache_dir: str | Path | None = None,
    *,
    max_steps: int | None = None,
    progress: bool = True,
) -> tuple[GPT2LMHeadModel, dict[str, Any]]:
    """gpt-tiny trained on the fortunes corpus, in eval mode, and its source record.

    Trains on first use (or when cached with another recipe; ``max_steps`` shortens the
    budget, for tests) and caches the folder under ``cache_dir`` (default: the prunekit cache).
    Returns ``(model, {"kind": "hf", "path", "model_type", "class", "name": "gpt-tiny",
    "dataset": "text:<calib file>", "eval": "text:<eval file>"})``.
    """
    recipe = RECIPE if max_steps is None else replace(RECIPE, max_steps=max_steps)
    folder = gpt_tiny_dir(cache_dir)
    files = gpt_tiny_corpus(cache_dir)
    model = _load_cached(folder, recipe)
    if model is None:
        _train_into(folder, files, recipe, progress)
        model = _load_cached(folder, recipe)
        assert model is not None, "a freshly written gpt-tiny folder must load"
    source = hf_source(
        model, name=NAME, dataset=f"text:{files['calib']}", eval=f"text:{files['eval']}"
    )
    return model.eval(), source


def load_gpt_tiny() -> GPT2LMHeadModel:
    """gpt-tiny from the default cache (``$PRUNEKIT_CACHE``), trained first if needed."""
    return pretrained_gpt_tiny()[0]


def calib_spec() -> str:
    """``text:FILE`` of the calibration split (written into the default cache if needed)."""
    return f"text:{gpt_tiny_corpus()['calib']}"


def gpt_tiny_tokenizer(cache_dir: str | Path | None = None) -> Any:
    """The tokenizer of the cached gpt-tiny (trained first if needed): tokenize calibration
    text with it. A ``transformers.PreTrainedTokenizerFast``."""
    folder = gpt_tiny_dir(cache_dir)
    if _read_record(folder) is None:
        pretrained_gpt_tiny(cache_dir)
    return load_tokenizer(folder)


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _load_cached(folder: Path, recipe: GPTTinyRecipe) -> GPT2LMHeadModel | None:
    record = _read_record(folder)
    if record is None:
        return None
    if record.get("recipe") != recipe.to_dict():
        logger.info("builtin:%s: cached with another recipe; retraining", NAME)
        return None
    try:
        model = load_hf_model(folder)
    except (OSError, ValueError, RuntimeError) as err:
        logger.warning("builtin:%s: cache %s unusable (%s); retraining", NAME, folder, err)
        return None
    logger.info("builtin:%s: loaded from %s", NAME, folder)
    return model


def _train_into(
    folder: Path, files: dict[str, Path], recipe: GPTTinyRecipe, progress: bool
) -> dict[str, Any]:
    # Imported here: measurement and the cache import the model registry, which imports us.
    from prunekit.measure.text import perplexity

    logger.info("builtin:%s: training (first use; cached in %s)", NAME, folder)
    start = time.perf_counter()
    lines = {name: file.read_text(encoding="utf-8").splitlines() for name, file in files.items()}
    tokenizer = train_tokenizer(lines["train"], recipe.vocab_size)
    streams = {name: token_stream(tokenizer, split) for name, split in lines.items()}
    eval_windows = windows(streams["eval"], recipe.seq_len)

    torch.manual_seed(recipe.seed)  # the initial weights
    model = _build(recipe)
    untrained = perplexity(model, eval_windows.split(32))
    train_start = time.perf_counter()
    losses = _train_loop(model, streams["train"], recipe, progress)
    train_seconds = time.perf_counter() - train_start
    trained = perplexity(model, eval_windows.split(32))
    seconds = time.perf_counter() - start
    # Perplexity: non-overlapping 128-token windows of the held-out split, each scored alone.
    record = {
        "name": NAME,
        "corpus": PACKAGE,
        "recipe": recipe.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens": {name: stream.numel() for name, stream in streams.items()},
        "samples": {name: len(split) for name, split in lines.items()},
        "eval_perplexity": trained,
        "untrained_perplexity": untrained,
        "unigram_perplexity": unigram_perplexity(streams["train"], eval_windows, recipe.vocab_size),
        "final_train_loss": losses[-1],
        "train_seconds": round(train_seconds, 2),
        "seconds": round(seconds, 2),  # all of it: tokenizer, training, the two evaluations
        "prunekit_version": prunekit_version(),
        "torch_version": torch.__version__,
    }
    logger.info(
        "builtin:%s: held-out perplexity %.1f (unigram %.1f) after %.0f s",
        NAME,
        record["eval_perplexity"],
        record["unigram_perplexity"],
        seconds,
    )
    _write_folder(folder, lambda tmp: _save(tmp, model, tokenizer, record))
    return record


def _train_loop(
    model: torch.nn.Module, train: torch.Tensor, recipe: GPTTinyRecipe, progress: bool
) -> list[float]:
    # nanoGPT-style: random windows of the train stream, AdamW (no decay on biases and norms),
    # linear warm-up then cosine decay to 10% of the peak LR, gradient clipping.
    generator = torch.Generator().manual_seed(recipe.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )

    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(recipe.max_steps - recipe.warmup_steps, 1)
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    model.train()
    losses = []
    bar = tqdm(range(recipe.max_steps), desc=NAME, disable=None if progress else True)
    for step in bar:
        starts = torch.randint(
            train.numel() - recipe.seq_len, (recipe.batch_size,), generator=generator
        )
        batch = torch.stack([train[s : s + recipe.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % 50 == 0 or step == recipe.max_steps - 1:
            logger.info("builtin:%s: step %d loss %.3f", NAME, step, losses[-1])
    model.eval()
    return losses


def _save(folder: Path, model: Any, tokenizer: Any, record: dict[str, Any]) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")


def _write_folder(folder: Path, write: Callable[[Path], object]) -> None:
    # Built beside the target and renamed into place, so a reader never sees half a folder.
    # The folder is in prunekit's own cache: whatever is there (a stale or damaged copy) goes.
    with staged_dir(folder, replaceable=lambda p: True, mode=0o755) as tmp:
        write(tmp)
        # safetensors writes 0600; the cache may be shared via PRUNEKIT_CACHE.
        for file in tmp.iterdir():
            file.chmod(0o644)
