"""Write a Gemma checkpoint of a real shape with random weights, for GPU runs where no weights can be downloaded.

    python bench/make_model.py OUT_DIR --shape gemma3-27b --layers 8
    python bench/make_model.py OUT_DIR --shape gemma4-tiny
    python bench/make_model.py OUT_DIR --shape gemma3-multimodal-tiny

gemma3-27b: Gemma-3-27B's text decoder (hidden 5376, MLP 21504, 32 heads, 16 KV heads, head_dim 128, vocab
262,208, sliding window 1024, 5 local : 1 global layers), cut to --layers decoder layers. The tokenizer is the
tests' SentencePiece tokenizer trained on the demo corpus (ids < 400 of the 262k vocab are used), so the
pipeline can tokenize the demo data for it; its chat markers sit at their own ids. gemma3-multimodal-tiny: a
tiny Gemma3ForConditionalGeneration (SigLIP tower included), the class the real 4B-27B checkpoints load as,
whose training needs token_type_ids and whose vision tower LoRA must leave alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.tiny import tiny_tokenizer  # noqa: E402

GEMMA3_27B = dict(
    vocab_size=262_208, hidden_size=5376, intermediate_size=21504, num_attention_heads=32, num_key_value_heads=16,
    head_dim=128, sliding_window=1024, query_pre_attn_scalar=168, rope_theta=1_000_000.0,
    max_position_embeddings=131072, pad_token_id=0, eos_token_id=1, bos_token_id=2,
)


def gemma3_27b(layers: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(num_hidden_layers=layers, **GEMMA3_27B)
    config.layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]
    return Gemma3ForCausalLM(config)


def gemma4_tiny(vocab_size: int):
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    config = Gemma4TextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, global_head_dim=32, layer_types=["sliding_attention", "full_attention"],
        sliding_window=64, vocab_size_per_layer_input=vocab_size, hidden_size_per_layer_input=8,
        max_position_embeddings=1024, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    return Gemma4ForCausalLM(config)


def gemma3_multimodal_tiny(vocab_size: int):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=vocab_size + 1, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=64,
                            pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    # the image token gets an id of its own past the text vocabulary; no image is ever given
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=vocab_size, boi_token_index=vocab_size, eoi_token_index=vocab_size)
    return Gemma3ForConditionalGeneration(config)


SHAPES = {"gemma3-27b": None, "gemma4-tiny": gemma4_tiny, "gemma3-multimodal-tiny": gemma3_multimodal_tiny}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=list(SHAPES), default="gemma3-27b")
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    family = "gemma4" if args.shape == "gemma4-tiny" else "gemma3"
    tokenizer = tiny_tokenizer(args.out, family)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = gemma3_27b(args.layers) if args.shape == "gemma3-27b" else SHAPES[args.shape](len(tokenizer))
    model.to(torch.bfloat16).save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.shape}: {params / 1e6:.1f}M parameters in {args.out}")


if __name__ == "__main__":
    main()
