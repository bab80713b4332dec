"""Tiny Hugging Face transformers built from small configs (no download), seeded, in eval mode.

Each builder seeds with ``torch.manual_seed(0)`` before construction. ``ZOO`` maps a short name to a
function returning ``(model, example_inputs)`` with deterministic keyword inputs for
``model(**example_inputs)``. Sizes are chosen so pruning half the heads / channels is meaningful
(4 heads of dim 8, intermediate 64-128, 2 layers or 2 stages).

Attention runs with each model's default implementation (SDPA where supported; Bloom, MobileViT and
the CNNs have eager only); none needs ``attn_implementation`` set. Tracing note: transformers 5's
mask helpers read the attention mask's values (``padding_mask.all()``) even with eager attention,
so ``make_fx(..., tracing_mode="real")`` of the text models needs
``_error_on_data_dependent_ops=False`` (the read value is then baked into the graph).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers
from torch import nn

VOCAB = 64
BATCH, SEQ = 2, 8
IMAGE = 32


# --------------------------------------------------------------------------- text: decoders


def gpt2(vocab_size: int = 64, n_head: int = 2, layers: int = 2) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=layers, n_head=n_head,
        bos_token_id=0, eos_token_id=0, use_cache=False,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def llama_gqa(vocab_size: int = 64, layers: int = 2) -> transformers.LlamaForCausalLM:
    """Grouped-query attention: 4 query heads sharing 2 key/value heads."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, use_cache=False,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def mistral_gqa() -> transformers.MistralForCausalLM:
    """GQA (4 query / 2 kv heads) with a sliding window shorter than the sequence."""
    torch.manual_seed(0)
    config = transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        sliding_window=4, use_cache=False,
    )  # fmt: skip
    return transformers.MistralForCausalLM(config).eval()


def qwen2_gqa() -> transformers.Qwen2ForCausalLM:
    """GQA (4 query / 2 kv heads) with q/k/v biases."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, use_cache=False,
    )  # fmt: skip
    return transformers.Qwen2ForCausalLM(config).eval()


def gemma() -> transformers.GemmaForCausalLM:
    """GeGLU MLP, (1 + w) RMSNorm, scaled embeddings, explicit head_dim."""
    torch.manual_seed(0)
    config = transformers.GemmaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        use_cache=False,
    )  # fmt: skip
    return transformers.GemmaForCausalLM(config).eval()


def phi() -> transformers.PhiForCausalLM:
    """Parallel attention/MLP block, partial rotary embedding, LayerNorm, biases."""
    torch.manual_seed(0)
    config = transformers.PhiConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, partial_rotary_factor=0.5,
        max_position_embeddings=64, use_cache=False,
    )  # fmt: skip
    return transformers.PhiForCausalLM(config).eval()


def opt() -> transformers.OPTForCausalLM:
    torch.manual_seed(0)
    config = transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32, use_cache=False,
        pad_token_id=1, bos_token_id=2, eos_token_id=2,
    )  # fmt: skip
    return transformers.OPTForCausalLM(config).eval()


def gpt_neox() -> transformers.GPTNeoXForCausalLM:
    """Fused per-head-interleaved QKV, partial rotary, parallel residual (Pythia)."""
    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, partial_rotary_factor=0.5,
        use_cache=False, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPTNeoXForCausalLM(config).eval()


def falcon_mqa() -> transformers.FalconForCausalLM:
    """Multi-query attention (1 kv head), parallel attention/MLP, fused QKV."""
    torch.manual_seed(0)
    config = transformers.FalconConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        multi_query=True, parallel_attn=True, use_cache=False, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.FalconForCausalLM(config).eval()


def bloom() -> transformers.BloomForCausalLM:
    """ALiBi position bias, fused per-head-interleaved QKV, embedding LayerNorm."""
    torch.manual_seed(0)
    config = transformers.BloomConfig(
        vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4, use_cache=False,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return transformers.BloomForCausalLM(config).eval()


# --------------------------------------------------------------------------- text: encoders


def bert(
    vocab_size: int = 64, num_attention_heads: int = 2, layers: int = 2
) -> transformers.BertModel:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
        num_attention_heads=num_attention_heads, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.BertModel(config).eval()


def distilbert() -> transformers.DistilBertForSequenceClassification:
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
        max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    return transformers.DistilBertForSequenceClassification(config).eval()


def roberta() -> transformers.RobertaForSequenceClassification:
    """Position ids derived from the padding token (padding_idx=1)."""
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    return transformers.RobertaForSequenceClassification(config).eval()


def albert() -> transformers.AlbertForMaskedLM:
    """Both layers share one set of weights; factorized embedding (16 -> 32); tied decoder."""
    torch.manual_seed(0)
    config = transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_hidden_groups=1, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    return transformers.AlbertForMaskedLM(config).eval()


def t5_encoder() -> transformers.T5EncoderModel:
    """Relative position buckets, RMSNorm without mean, no biases, gated-GELU MLP (T5 v1.1)."""
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu", use_cache=False,
    )  # fmt: skip
    return transformers.T5EncoderModel(config).eval()


# --------------------------------------------------------------------------- vision: CNNs


def resnet() -> transformers.ResNetForImageClassification:
    """Bottleneck blocks (reduction 4), two stages."""
    torch.manual_seed(0)
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1],
        layer_type="bottleneck", num_labels=10,
    )  # fmt: skip
    return transformers.ResNetForImageClassification(config).eval()


def mobilenet_v2() -> transformers.MobileNetV2ForImageClassification:
    """Depthwise inverted residuals with ReLU6 (fixed 17-bottleneck layout; channels scaled by 0.1,
    at least 8; expansion 4; the 1x1 head conv scaled too, 1280 -> 128)."""
    torch.manual_seed(0)
    config = transformers.MobileNetV2Config(
        num_channels=3, image_size=IMAGE, depth_multiplier=0.1, min_depth=8, expand_ratio=4,
        finegrained_output=False, num_labels=10,
    )  # fmt: skip
    return transformers.MobileNetV2ForImageClassification(config).eval()


def convnext() -> transformers.ConvNextForImageClassification:
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(
        num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
        image_size=IMAGE, num_labels=10,
    )  # fmt: skip
    return transformers.ConvNextForImageClassification(config).eval()


def convnext_v2() -> transformers.ConvNextV2ForImageClassification:
    """ConvNeXt with global response normalization in the MLP."""
    torch.manual_seed(0)
    config = transformers.ConvNextV2Config(
        num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
        image_size=IMAGE, num_labels=10,
    )  # fmt: skip
    return transformers.ConvNextV2ForImageClassification(config).eval()


def regnet() -> transformers.RegNetForImageClassification:
    """RegNetY: grouped 3x3 convs (group width 8) with squeeze-and-excitation."""
    torch.manual_seed(0)
    config = transformers.RegNetConfig(
        num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
        groups_width=8, layer_type="y", num_labels=10,
    )  # fmt: skip
    return transformers.RegNetForImageClassification(config).eval()


def efficientnet() -> transformers.EfficientNetForImageClassification:
    """MBConv blocks with depthwise convs, SE and swish; two block groups.

    Channel counts are scaled by ``width_coefficient``: the stem is fixed at 32 -> 8 and the head
    conv at 1280 -> 64 (= hidden_dim); the groups go 8 -> 16 (expand 1) and 16 -> 32 (expand 4).
    """
    torch.manual_seed(0)
    config = transformers.EfficientNetConfig(
        num_channels=3, image_size=IMAGE, width_coefficient=0.05, depth_coefficient=1.0,
        kernel_sizes=[3, 5], in_channels=[32, 320], out_channels=[320, 640],
        depthwise_padding=[], strides=[1, 2], num_block_repeats=[1, 1], expand_ratios=[1, 4],
        hidden_dim=64, num_labels=10,
    )  # fmt: skip
    return transformers.EfficientNetForImageClassification(config).eval()


# --------------------------------------------------------------------------- vision: transformers


def vit() -> transformers.ViTForImageClassification:
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=IMAGE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=10,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config).eval()


def deit() -> transformers.DeiTForImageClassificationWithTeacher:
    """ViT with an extra distillation token and two classifier heads."""
    torch.manual_seed(0)
    config = transformers.DeiTConfig(
        image_size=IMAGE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=10,
    )  # fmt: skip
    return transformers.DeiTForImageClassificationWithTeacher(config).eval()


def dinov2() -> transformers.Dinov2ForImageClassification:
    """LayerScale; classifier reads [CLS ; mean(patch tokens)]."""
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        image_size=IMAGE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, mlp_ratio=2, num_labels=10,
    )  # fmt: skip
    return transformers.Dinov2ForImageClassification(config).eval()


def beit() -> transformers.BeitForImageClassification:
    """Per-layer relative position bias, LayerScale, mean pooling."""
    torch.manual_seed(0)
    config = transformers.BeitConfig(
        image_size=IMAGE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, use_relative_position_bias=True,
        use_mean_pooling=True, num_labels=10,
    )  # fmt: skip
    return transformers.BeitForImageClassification(config).eval()


def clip_vision() -> transformers.CLIPVisionModelWithProjection:
    """Pre-LN ViT with quick-GELU and a projection head."""
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        image_size=IMAGE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, projection_dim=16,
    )  # fmt: skip
    return transformers.CLIPVisionModelWithProjection(config).eval()


def swin() -> transformers.SwinForImageClassification:
    """Windowed attention (window 4) with shifted windows in the second block of each stage."""
    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=IMAGE, patch_size=2, num_channels=3, embed_dim=16, depths=[2, 2],
        num_heads=[2, 4], window_size=4, mlp_ratio=2.0, num_labels=10,
    )  # fmt: skip
    return transformers.SwinForImageClassification(config).eval()


def segformer(heads: tuple[int, int] = (2, 4)) -> transformers.SegformerForSemanticSegmentation:
    """Overlapping patch embeddings, spatial-reduction attention, Mix-FFN, bilinear decode head.
    SegFormer-B0's stages have 1, 2, 5, 8 heads: ``heads=(1, 2)`` is its single-head start."""
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
        hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=list(heads),
        mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=5,
    )  # fmt: skip
    return transformers.SegformerForSemanticSegmentation(config).eval()


def mobilevit() -> transformers.MobileViTForImageClassification:
    """Inverted-residual CNN stages mixed with unfold -> transformer -> fold blocks (2+4+3
    transformer layers, fixed by the architecture; 64x64 input so the last stage is 2x2)."""
    torch.manual_seed(0)
    config = transformers.MobileViTConfig(
        num_channels=3, image_size=64, patch_size=2, hidden_sizes=[32, 32, 32],
        neck_hidden_sizes=[8, 8, 16, 16, 16, 32, 64], num_attention_heads=4, mlp_ratio=2.0,
        expand_ratio=2.0, num_labels=10,
    )  # fmt: skip
    return transformers.MobileViTForImageClassification(config).eval()


# --------------------------------------------------------------------------- audio


def whisper_encoder() -> transformers.WhisperForAudioClassification:
    """Conv1d stem over log-mel features, then a pre-LN transformer encoder."""
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=16, d_model=32, encoder_layers=2,
        encoder_attention_heads=4, encoder_ffn_dim=64, max_source_positions=16,
        classifier_proj_size=16, num_labels=5, use_cache=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
    )  # fmt: skip
    return transformers.WhisperForAudioClassification(config).eval()


# --------------------------------------------------------------------------- example inputs


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def text_inputs(
    vocab_size: int = VOCAB, *, pad: bool = True, low: int = 3
) -> dict[str, torch.Tensor]:
    """Batch 2 x seq 8 token ids (from ``low`` to skip special ids); with ``pad`` the second
    sample ends in 3 padding positions (mask 0)."""
    ids = torch.randint(low, vocab_size, (BATCH, SEQ), generator=_generator())
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    if pad:
        mask[1, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def image_inputs(size: int = IMAGE) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(BATCH, 3, size, size, generator=_generator())}


def audio_inputs(mel_bins: int = 16, frames: int = 32) -> dict[str, torch.Tensor]:
    return {"input_features": torch.randn(BATCH, mel_bins, frames, generator=_generator())}


def _with(build: Callable[[], nn.Module], inputs: Callable[[], dict[str, torch.Tensor]]):
    return lambda: (build(), inputs())


def _decoder(build: Callable[[], nn.Module]):
    return _with(build, lambda: text_inputs(pad=False))


def _encoder(build: Callable[[], nn.Module]):
    return _with(build, text_inputs)


def _vision(build: Callable[[], nn.Module], size: int = IMAGE):
    return _with(build, lambda: image_inputs(size))


@torch.no_grad()
def perturb_(model: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Add seeded Gaussian noise to every parameter, in place. Hugging Face init leaves some
    parameters constant (ConvNeXtV2 GRN weights 0, Swin/BEiT relative-position tables 0,
    LayerScale 1.0), which would hide mistakes in the pruning of the ops that read them."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.is_floating_point():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return model


ZOO: dict[str, Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]] = {
    # CNNs
    "resnet": _vision(resnet),
    "mobilenet_v2": _vision(mobilenet_v2),
    "convnext": _vision(convnext),
    "convnext_v2": _vision(convnext_v2),
    "regnet": _vision(regnet),
    "efficientnet": _vision(efficientnet),
    # vision transformers
    "vit": _vision(vit),
    "deit": _vision(deit),
    "dinov2": _vision(dinov2),
    "beit": _vision(beit),
    "clip_vision": _vision(clip_vision),
    "swin": _vision(swin),
    "segformer": _vision(segformer),
    "segformer_single_head": _vision(lambda: segformer(heads=(1, 2))),
    "mobilevit": _vision(mobilevit, 64),
    # text encoders
    "bert": _encoder(lambda: bert(num_attention_heads=4)),
    "distilbert": _encoder(distilbert),
    "roberta": _encoder(roberta),
    "albert": _encoder(albert),
    "t5_encoder": _encoder(t5_encoder),
    # decoder LMs
    "gpt2": _decoder(lambda: gpt2(n_head=4)),
    "llama_gqa": _decoder(llama_gqa),
    "mistral_gqa": _decoder(mistral_gqa),
    "qwen2_gqa": _decoder(qwen2_gqa),
    "gemma": _decoder(gemma),
    "phi": _decoder(phi),
    "opt": _decoder(opt),
    "gpt_neox": _decoder(gpt_neox),
    "falcon_mqa": _decoder(falcon_mqa),
    "bloom": _decoder(bloom),
    # audio
    "whisper_encoder": _with(whisper_encoder, audio_inputs),
}
