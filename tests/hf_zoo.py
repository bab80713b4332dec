"""Tiny Hugging Face transformers built from small configs (no download), seeded, in eval mode."""

from __future__ import annotations

import torch
import transformers


def gpt2(vocab_size: int = 64, n_head: int = 2) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=n_head,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def bert(vocab_size: int = 64, num_attention_heads: int = 2) -> transformers.BertModel:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=num_attention_heads, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.BertModel(config).eval()


def llama_gqa(vocab_size: int = 64) -> transformers.LlamaForCausalLM:
    """Grouped-query attention: 4 query heads sharing 2 key/value heads."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()
