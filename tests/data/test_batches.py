"""group_by_length: the same samples re-batched by length (less padding), seeded; batches it
cannot regroup come back as they were."""

from __future__ import annotations

import torch

from prunekit.data.batches import group_by_length


def _batches(lengths: list[int], size: int = 4, width: int = 20) -> list[dict[str, torch.Tensor]]:
    # Line i: tokens i+1 repeated over its length, right-padded with 0 to width.
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = i + 1
    mask = (ids != 0).long()
    return [
        {"input_ids": ids[s : s + size], "token_type_ids": torch.zeros_like(ids[s : s + size]),
         "attention_mask": mask[s : s + size]}
        for s in range(0, len(lengths), size)
    ]  # fmt: skip


def _lines(batches: list[dict[str, torch.Tensor]]) -> list[tuple[int, int]]:
    # (line, length) of every real line, from its tokens
    out = []
    for b in batches:
        for row, mask in zip(b["input_ids"], b["attention_mask"], strict=True):
            assert torch.equal(row != 0, mask.bool())  # the mask follows the tokens
            out.append((int(row[0]), int(mask.sum())))
    return sorted(out)


def test_the_same_lines_in_batches_of_similar_length_with_less_padding() -> None:
    lengths = [2 + (7 * i) % 17 for i in range(37)]  # 2..18 tokens, mixed
    batches = _batches(lengths)
    grouped = group_by_length(batches, seed=0)
    assert _lines(grouped) == _lines(batches)  # every line once, its tokens intact
    assert sorted(len(b["input_ids"]) for b in grouped) == [1] + [4] * 9  # same batch size
    padded = sum(b["input_ids"].numel() for b in grouped)
    assert padded < 0.7 * 37 * 18  # a random batch is as long as its longest line
    for b in grouped:  # trimmed: the last column holds a real token
        assert (
            b["attention_mask"][:, -1].any() and b["input_ids"].shape == b["token_type_ids"].shape
        )


def test_the_order_depends_only_on_the_seed() -> None:
    batches = _batches([2 + (5 * i) % 13 for i in range(40)])
    first, again = group_by_length(batches, seed=3), group_by_length(batches, seed=3)
    assert all(
        torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again, strict=True)
    )
    other = group_by_length(batches, seed=4)
    assert any(
        not torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other, strict=True)
    )


def test_batches_it_cannot_regroup_come_back_unchanged() -> None:
    tensors = [torch.randn(4, 3), torch.randn(4, 3)]
    assert group_by_length(tensors) is tensors
    mixed = _batches([3, 4, 5, 6]) + _batches([3, 4], width=12)  # two padded widths
    assert group_by_length(mixed) is mixed
    keys = _batches([3, 4, 5, 6, 7])
    keys[1] = {"input_ids": keys[1]["input_ids"], "attention_mask": keys[1]["attention_mask"]}
    assert group_by_length(keys) is keys
    assert group_by_length([]) == []
