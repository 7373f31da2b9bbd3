"""Write a Gemma checkpoint of a real shape with random weights, for GPU runs where no weights can be downloaded.

    python bench/make_model.py OUT_DIR --shape gemma3-27b --layers 8
    python bench/make_model.py OUT_DIR --shape gemma4-tiny
    python bench/make_model.py OUT_DIR --shape gemma3-multimodal-tiny

gemma3-27b: Gemma-3-27B's text decoder (hidden 5376, MLP 21504, 32 heads, 16 KV heads, head_dim 128, vocab
262,208, sliding window 1024, 5 local : 1 global layers), cut to --layers decoder layers. The full 62 layers
are 54 GB in bf16, more than a device machine's disk holds comfortably: write 6 layers (one of each attention
type and the whole 5:1 pattern) and `grow` the loaded 4-bit model to 62 in memory (bench/throughput.py
--layers). The tokenizer is the tests' SentencePiece tokenizer trained on the demo corpus (ids < 400 of the
262k vocab are used), so the pipeline can tokenize the demo data for it; its chat markers sit at their own
ids. gemma3-multimodal-tiny: a tiny Gemma3ForConditionalGeneration (SigLIP tower included), the class the real
4B-27B checkpoints load as, whose training needs token_type_ids and whose vision tower LoRA must leave alone.
"""
from __future__ import annotations

import argparse
import copy
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
    config.layer_types = gemma3_layer_types(layers)
    return Gemma3ForCausalLM(config)


def gemma3_layer_types(layers: int) -> list[str]:
    """Gemma 3's pattern: every sixth layer attends globally, the other five through the sliding window."""
    return ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]


def text_model(model) -> torch.nn.Module:
    """The module that holds the decoder layers (`.layers`), under a PEFT wrapper or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def decoder_layers(model) -> torch.nn.ModuleList:
    return text_model(model).layers


def grow(model, layers: int, seed: int = 0) -> None:
    """Append decoder layers to a loaded Gemma 3 model (4-bit from load_base, or plain) up to `layers`, in place.

    Each new layer is a copy of the loaded layer of its attention type, whose linear weights are then drawn afresh
    (normal, the config's initializer_range, as from_config draws them) and, for bitsandbytes layers, quantised by
    the same call transformers' loader makes (Params4bit(bf16 weight, **the loaded parameter's settings).to(device)):
    the same module types, dtypes and quantisation as a from_pretrained load of a checkpoint that deep."""
    config = model.config.get_text_config()
    stack = decoder_layers(model)
    have = len(stack)
    if layers < have:
        raise ValueError(f"--layers {layers}: the checkpoint already has {have} decoder layers")
    types = gemma3_layer_types(layers)
    if list(config.layer_types) != types[:have]:
        raise ValueError(f"checkpoint layer_types {config.layer_types} do not follow Gemma 3's 5:1 pattern")
    if any(types.index(kind) >= have for kind in set(types)):
        raise ValueError(f"the checkpoint's {have} layers lack a layer of each attention type: make one of 6 or more")
    templates = {kind: stack[types.index(kind)] for kind in set(types)}
    generator = torch.Generator(device=next(stack.parameters()).device)
    for index in range(have, layers):
        layer = copy.deepcopy(templates[types[index]])
        layer.self_attn.layer_idx = index
        generator.manual_seed(seed * 1_000_003 + index)
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                redraw_linear(module, config.initializer_range, generator)
        stack.append(layer)
    config.num_hidden_layers = layers
    config.layer_types = types


def redraw_linear(module: torch.nn.Linear, std: float, generator: torch.Generator) -> None:
    weight = module.weight
    shape = (module.out_features, module.in_features)
    if type(weight).__name__ == "Params4bit":
        import bitsandbytes as bnb

        fresh = torch.empty(shape, dtype=weight.quant_state.dtype, device=weight.device)
        fresh.normal_(0.0, std, generator=generator)
        settings = {k: getattr(weight, k) for k in ("blocksize", "compress_statistics", "quant_type", "quant_storage")}
        module.weight = bnb.nn.Params4bit(fresh, requires_grad=False, module=module, **settings).to(fresh.device)
    else:
        with torch.no_grad():
            weight.normal_(0.0, std, generator=generator)
    if module.bias is not None:
        with torch.no_grad():
            module.bias.zero_()


def layer_signature(layer: torch.nn.Module) -> list:
    """Every submodule's type and every parameter's class, dtype, shape and quantisation settings: two layers with
    the same signature are built alike (values aside)."""
    rows = []
    for name, module in layer.named_modules():
        row = [name, type(module).__name__, str(getattr(module, "compute_dtype", None))]
        for pname, param in module.named_parameters(recurse=False):
            state = getattr(param, "quant_state", None)
            quant = None if state is None else [state.quant_type, state.blocksize, str(state.dtype),
                                                 list(state.shape), bool(state.nested)]
            row.append([pname, type(param).__name__, str(param.dtype), list(param.shape), param.requires_grad,
                        str(getattr(param, "quant_storage", None)), quant])
        rows.append(row)
    return rows


def check_grown(model, loaded: int) -> dict:
    """Layers past the first `loaded` (those from the checkpoint, as from_pretrained built them) must match the
    loaded layer of their attention type; returns what was compared."""
    stack = decoder_layers(model)
    types = model.config.get_text_config().layer_types
    reference = {kind: layer_signature(stack[types.index(kind)]) for kind in set(types)}
    for index in range(loaded, len(stack)):
        if layer_signature(stack[index]) != reference[types[index]]:
            raise AssertionError(f"decoder layer {index} differs from the loaded {types[index]} layer")
    kinds = sorted({row[1] for rows in reference.values() for row in rows})
    return {"loaded_layers": loaded, "grown_layers": len(stack) - loaded, "same_as_loaded": True,
            "module_types": kinds, "signature_full_attention_layer": reference.get("full_attention")}


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
