"""Reading the configured sources into one row schema.

Every source row becomes a dict with `id` (stable string), `source`, `kind` (`text` | `chat`), `text` or
`messages` (roles system/user/assistant) and `meta` (url, title where known). A row that cannot be read or
mapped raises `BadRow`; the caller counts it, with its location, against `data.max_bad_fraction`. A row the
source itself marks as unusable (wrong language, OSCAR quality warnings) is a `Skip`, counted by reason.
"""
from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError, RetryableError
from pipeline.params import Source

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
MESSAGE_ROLES = {"system", "user", "assistant"}
# OSCAR-2301 annotations that mark a document as mostly non-prose; see the OSCAR docs for their meaning.
OSCAR_BAD_WARNINGS = {"tiny", "short_sentences", "header", "footer", "noisy"}
ALPACA_COLUMNS = (("instruction", "input", "output"), ("talimat", "giriş", "çıktı"))


class BadRow(Exception):
    """A row that is malformed; the message says why."""


class Skip(Exception):
    """A well-formed row the source's own metadata excludes; the message is the counter's name."""


@dataclass(frozen=True)
class Record:
    """One raw row and where it came from (`file:line` or `hub-id[index]`), for error messages."""

    location: str
    row: Any


def content_id(*parts: str) -> str:
    # surrogatepass: a row with an unpaired surrogate is refused after mapping (_require_unicode), not here
    return hashlib.sha1("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _text(row: dict, field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        raise BadRow(f"field '{field}' is {type(value).__name__}, expected a string")
    if not value.strip():
        raise BadRow(f"field '{field}' is empty")
    return value


def _row_id(row: dict, *content: str) -> str:
    value = row.get("id")
    if value is None or value == "":
        return content_id(*content)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BadRow(f"field 'id' is {type(value).__name__}, expected a string or integer")
    return str(value)


def _chat_id(row: dict, messages: list[dict]) -> str:
    # roles are part of the content: the same two texts with user and assistant swapped are another chat
    return _row_id(row, *(f"{m['role']}\x1e{m['content']}" for m in messages))


def _text_row(row_id: str, text: str, url: Any = None, title: Any = None) -> dict:
    meta = {"url": url if isinstance(url, str) else None, "title": title if isinstance(title, str) else None}
    return {"id": row_id, "kind": "text", "text": text, "messages": None, "meta": meta}


def _chat_row(row_id: str, messages: list[dict]) -> dict:
    if not any(m["role"] == "assistant" for m in messages) or not any(m["role"] == "user" for m in messages):
        raise BadRow("a chat needs at least one user and one assistant turn")
    return {"id": row_id, "kind": "chat", "text": None, "messages": messages, "meta": {"url": None, "title": None}}


def from_text(row: dict) -> dict:
    text = _text(row, "text")
    return _text_row(_row_id(row, text), text, url=row.get("url"))


def from_oscar(row: dict) -> dict:
    text = _text(row, "text")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise BadRow(f"field 'meta' is {type(meta).__name__}, expected an object")
    label = (meta.get("identification") or {}).get("label")
    if label is not None and label != "tr":
        raise Skip("source_language")
    if OSCAR_BAD_WARNINGS.intersection(meta.get("quality_warnings") or []):
        raise Skip("source_quality_warning")
    url = (meta.get("warc_headers") or {}).get("warc-target-uri")
    return _text_row(_row_id(row, text), text, url=url)


def from_wikipedia(row: dict) -> dict:
    title, body = _text(row, "title"), _text(row, "text")
    # The article body does not repeat its title; a heading line gives the model the topic. A body that opens
    # with the title as a word ("Ankara, Türkiye'nin...", not "Ankaragücü...") names it already.
    opening = body.lstrip()
    names_title = opening.startswith(title) and not opening[len(title):len(title) + 1].isalnum()
    text = body if names_title else f"{title}\n\n{body}"
    return _text_row(_row_id(row, text), text, url=row.get("url"), title=title)


def from_sharegpt(row: dict) -> dict:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise BadRow("field 'conversations' is missing or not a non-empty list")
    messages = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise BadRow("a conversation turn is not an object")
        role = SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise BadRow(f"unknown conversation role {turn.get('from')!r}")
        messages.append({"role": role, "content": _text(turn, "value")})
    return _chat_row(_chat_id(row, messages), messages)


def from_alpaca(row: dict) -> dict:
    # some copies of merve/turkish_instructions name their columns " giriş" and " çıktı", with a space
    row = {key.strip() if isinstance(key, str) else key: value for key, value in row.items()}
    for instruction_key, input_key, output_key in ALPACA_COLUMNS:
        if instruction_key in row:
            break
    else:
        raise BadRow("no 'instruction' or 'talimat' field")
    instruction, output = _text(row, instruction_key), _text(row, output_key)
    extra = row.get(input_key)
    prompt = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return _chat_row(_row_id(row, prompt, output), messages)


def from_aya(row: dict) -> dict:
    if row.get("language_code") != "tur":
        raise Skip("source_language")
    prompt, answer = _text(row, "inputs"), _text(row, "targets")
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return _chat_row(_row_id(row, prompt, answer), messages)


def from_messages(row: dict) -> dict:
    turns = row.get("messages")
    if not isinstance(turns, list) or not turns:
        raise BadRow("field 'messages' is missing or not a non-empty list")
    messages = []
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("role") not in MESSAGE_ROLES:
            raise BadRow(f"a message has no role among {sorted(MESSAGE_ROLES)}")
        messages.append({"role": turn["role"], "content": _text(turn, "content")})
    return _chat_row(_chat_id(row, messages), messages)


ADAPTERS: dict[str, Callable[[dict], dict]] = {
    "text": from_text,
    "oscar": from_oscar,
    "wikipedia": from_wikipedia,
    "sharegpt": from_sharegpt,
    "alpaca": from_alpaca,
    "aya": from_aya,
    "messages": from_messages,
}


def to_row(source: Source, record: Record) -> dict:
    """Map one raw record to the unified schema, or raise BadRow / Skip."""
    if isinstance(record.row, BadRow):
        raise record.row
    if not isinstance(record.row, dict):
        raise BadRow(f"row is {type(record.row).__name__}, expected an object")
    try:
        row = ADAPTERS[source.format](record.row)
    except (TypeError, AttributeError) as exc:  # a field of an unexpected type deeper than the adapters check
        raise BadRow(f"unexpected field type: {exc}") from None
    row["source"] = source.name
    _require_unicode(row)
    return row


def _require_unicode(row: dict) -> None:
    """JSON escapes such as "\\ud800" decode to unpaired surrogates, which are not text: Arrow cannot store
    them (the row would crash the shard writer instead of being counted as bad)."""
    fields = [("id", row["id"]), ("text", row["text"]), *(("meta." + k, v) for k, v in row["meta"].items())]
    fields += [(f"messages[{i}].content", m["content"]) for i, m in enumerate(row["messages"] or [])]
    for field, value in fields:
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadRow(f"field '{field}' has an unpaired surrogate "
                             f"(\\u{ord(value[exc.start]):04x}) at character {exc.start}") from None


def is_local(path: str) -> bool:
    return os.path.exists(path) or any(c in path for c in "*?[") or path.endswith(LOCAL_SUFFIXES) or path.startswith(
        (".", "/", "~")
    )


def local_files(source: Source, index: int) -> list[Path]:
    path = os.path.expanduser(source.path)
    if os.path.isdir(path):
        files = [p for p in sorted(Path(path).rglob("*")) if p.suffix in LOCAL_SUFFIXES]
    else:
        files = [Path(p) for p in sorted(glob.glob(path, recursive=True)) if os.path.isfile(p)]
    if not files:
        raise PipelineError(f"data.sources[{index}].path: no .json/.jsonl/.parquet file at {source.path!r}")
    return files


def _json_lines(path: Path) -> Iterator[Record]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            location = f"{path}:{number}"
            if not raw.strip():
                continue
            try:
                yield Record(location, json.loads(raw.decode("utf-8")))
            except UnicodeDecodeError as exc:
                yield Record(location, BadRow(f"invalid UTF-8 at byte {exc.start}"))
            except json.JSONDecodeError as exc:
                yield Record(location, BadRow(f"malformed JSON: {exc.msg}"))


def _starts_with_array(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(64).lstrip().startswith(b"[")


def read_local(path: Path) -> Iterator[Record]:
    if path.suffix == ".parquet":
        number = 0
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    number += 1
                    yield Record(f"{path}:row {number}", row)
        except (pa.ArrowException, OSError) as exc:  # not parquet, or cut off: its rows cannot be told apart
            raise PipelineError(f"{path}: unreadable parquet after row {number}: {exc}") from None
    elif path.suffix == ".json" and _starts_with_array(path):
        # A JSON array (OpenHermes-2.5 ships one of 1.94 GB): ijson parses it an item at a time, where json.loads
        # would hold the whole file and all its objects in memory.
        import ijson

        number = 0
        with path.open("rb") as handle:
            try:
                for row in ijson.items(handle, "item", use_float=True):
                    number += 1
                    yield Record(f"{path}:item {number}", row)
            except (ijson.JSONError, UnicodeDecodeError) as exc:  # the items after it cannot be told apart
                reason = str(exc).strip().splitlines()[0]  # yajl's message quotes the text around it on more lines
                raise PipelineError(f"{path}: not a valid JSON array after item {number}: {reason}") from None
    else:
        yield from _json_lines(path)


def read_hub(source: Source, start: int = 0) -> Iterator[Record]:
    import datasets  # imported here: loading it costs seconds that local sources do not need

    def reason(exc: Exception) -> str:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

    try:
        stream = datasets.load_dataset(
            source.path, name=source.config, split=source.split, revision=source.revision, streaming=True,
            token=os.environ.get("HF_TOKEN"),
        )
    except (ConnectionError, OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise PipelineError(f"source {source.name!r}: cannot load Hub dataset {source.path!r}: {reason(exc)}") from None
    if start:
        stream = stream.skip(start)  # a resumed prepare: the rows before `start` are in its shards
    number = start
    try:
        for number, row in enumerate(stream, start=start):
            yield Record(f"{source.path}[{number}]", row)
    except (ConnectionError, OSError) as exc:  # mid-stream: the shards written so far stay for the next run
        raise RetryableError(f"source {source.name!r}: the Hub stream of {source.path!r} broke near row {number}: "
                             f"{reason(exc)}; run the stage again to continue") from None


def records(source: Source, index: int, start: int = 0) -> Iterator[Record]:
    """Raw records of one source in a deterministic order, from the `start`-th on."""
    if is_local(source.path):
        yield from itertools.islice((r for path in local_files(source, index) for r in read_local(path)), start, None)
    else:
        yield from read_hub(source, start)
