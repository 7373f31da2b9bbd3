"""Tiny Gemma checkpoints built from config, with a SentencePiece tokenizer trained here on the demo corpus.

A few hundred thousand parameters: fast enough to train and evaluate in tests on 2 cores. The special
tokens sit at Gemma's ids (pad 0, eos 1, bos 2, unk 3) and the chat markers are single tokens, as in the
real tokenizers.
"""
from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm
import torch

from pipeline.chat import TEMPLATES

REPO = Path(__file__).resolve().parent.parent
CHAT_MARKERS = {"gemma3": ["<start_of_turn>", "<end_of_turn>"], "gemma4": ["<|turn>", "<turn|>"]}


def corpus_lines() -> list[str]:
    lines = [json.loads(line)["text"] for line in (REPO / "demo/data/web.jsonl").read_text().splitlines()]
    for chat in json.loads((REPO / "demo/data/chats.json").read_text()):
        lines += [turn["value"] for turn in chat["conversations"]]
    lines += ["user model system", "English text for the other languages: the quick brown fox."]
    return lines


def tiny_tokenizer(directory: Path, family: str = "gemma3"):
    """A Gemma tokenizer of ~400 pieces saved in `directory` (tokenizer.model + converted fast tokenizer)."""
    from transformers import AutoTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    text = directory / "corpus.txt"
    text.write_text("\n".join(corpus_lines()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(directory / "tokenizer"), vocab_size=400, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=CHAT_MARKERS[family], byte_fallback=True,
        character_coverage=1.0, minloglevel=2,
    )
    text.unlink()
    (directory / "tokenizer.vocab").unlink()
    # transformers 5 ignores GemmaTokenizer(vocab_file=...); from_pretrained on the directory reads it.
    tokenizer = AutoTokenizer.from_pretrained(directory, tokenizer_type="gemma")
    tokenizer.chat_template = (TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")
    return tokenizer


def tiny_gemma3(directory: Path):
    """A ~200k-parameter Gemma 3 text model and its tokenizer, saved as a normal checkpoint."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = tiny_tokenizer(directory)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=64,
        max_position_embeddings=1024, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer
