"""Chats and texts to token ids and labels; the loss is on assistant turns only.

Chats are rendered with the model's own chat template. Where each assistant turn starts and ends is found
by rendering the conversation up to that turn (the prompt, with the generation prompt) and through it, so the
same code serves Gemma 2/3 (`<start_of_turn>model`) and Gemma 4 (`<|turn>model`, native system role, optional
thinking channel). TRL's own mask needs `{% generation %}` markers, which the Gemma 4 template lacks.
A token is learned when it starts inside an assistant span: the answer and its end-of-turn marker, not the
newline after it.
"""
from __future__ import annotations

from pathlib import Path

from jinja2.exceptions import TemplateError

IGNORE = -100
TEMPLATES = Path(__file__).resolve().parent.parent / "configs" / "chat_templates"


class ChatError(Exception):
    """A conversation the chat template refuses (roles out of order, ...); counted and skipped."""


def family(tokenizer) -> str:
    vocab = tokenizer.get_vocab()
    if "<|turn>" in vocab:
        return "gemma4"
    if "<start_of_turn>" in vocab:
        return "gemma3"
    raise ValueError("tokenizer has neither <start_of_turn> nor <|turn>: not a Gemma chat tokenizer")


def default_template(tokenizer) -> str:
    """The project's copy of the family's template, for checkpoints that ship none (GGUF, tiny test models)."""
    return (TEMPLATES / f"{family(tokenizer)}.jinja").read_text(encoding="utf-8")


def fold_system(messages: list[dict]) -> list[dict]:
    """Gemma 2/3 have no system role: its text opens the first user turn, as Gemma 3's template does."""
    if not messages or messages[0]["role"] != "system" or len(messages) < 2 or messages[1]["role"] != "user":
        return messages
    first = {"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
    return [first, *messages[2:]]


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError as exc:
        raise ChatError(str(exc)) from None


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the model must learn to produce."""
    try:
        text = render(tokenizer, messages)
    except ChatError:
        if messages[0]["role"] != "system":
            raise
        messages = fold_system(messages)  # Gemma 2's template refuses a system turn outright
        text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise ChatError("conversation opens with an assistant turn")
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (through.startswith(prompt) and text.startswith(through)):
            raise ChatError("chat template output is not prefix-stable; cannot locate assistant turns")
        spans.append((len(prompt), len(through.rstrip())))
    return text, spans


def encode_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    text, spans = assistant_spans(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token, (start, _end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
        learned = any(span_start <= start < span_end for span_start, span_end in spans)
        labels.append(token if learned else IGNORE)
    return encoding["input_ids"], labels


def encode_text(tokenizer, text: str, max_length: int) -> list[list[int]]:
    """BOS + text + EOS, cut into chunks of at most `max_length` tokens (nothing is thrown away)."""
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
