"""Reading the configured sources into one row schema.

Every source row becomes a dict with `id` (stable string), `source`, `kind` (`text` | `chat`), `text` or
`messages` (roles system/user/assistant) and `meta` (url, title where known). A row that cannot be read or
mapped raises `BadRow`; the caller counts it, with its location, against `data.max_bad_fraction`. A row the
source itself marks as unusable (wrong language, OSCAR quality warnings) is a `Skip`, counted by reason.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError, RetryableError
from pipeline.params import Dataset

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


def to_row(source: str, format: str, record: Record) -> dict:
    """Map one raw record of source `source` (its `format`) to the unified schema, or raise BadRow / Skip."""
    if isinstance(record.row, BadRow):
        raise record.row
    if not isinstance(record.row, dict):
        raise BadRow(f"row is {type(record.row).__name__}, expected an object")
    try:
        row = ADAPTERS[format](record.row)
    except (TypeError, AttributeError) as exc:  # a field of an unexpected type deeper than the adapters check
        raise BadRow(f"unexpected field type: {exc}") from None
    row["source"] = source
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


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_local(path: str) -> bool:
    """A Hub dataset id is `name` or `owner/name`; anything else (more slashes, a suffix, a glob, a path that
    exists) is a local path, so that a mistyped local path is reported missing, not unreachable on the Hub."""
    return (os.path.exists(path) or not HUB_ID.fullmatch(path) or path.endswith(LOCAL_SUFFIXES)
            or path.startswith((".", "/", "~")))


def _builder_files(path: str, dataset: Dataset, revision: str | None, param: str) -> list[str]:
    """The data files of a config and split as the `datasets` library resolves them (the repository's dataset
    card lists them per config): Hub URLs (hf://datasets/<id>@<commit>/<file>) or local paths."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(path, name=dataset.config, revision=revision,
                                                token=os.environ.get("HF_TOKEN"))
    except Exception as exc:  # network, gated, unknown id or config: all end the same way
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{param}: cannot load {path!r} (config {dataset.config!r}): {reason}") from None
    files = (builder.config.data_files or {}).get(dataset.split)
    if not files:
        raise PipelineError(f"{param}: {path!r} has no data files for split {dataset.split!r}")
    return [str(f) for f in files]


def data_files(dataset: Dataset, param: str, revision: str | None = None) -> list[str]:
    """Every file of a source's config and split, in a stable order: local paths, or Hub URLs to `fetch`.
    A local folder with a dataset card (README.md) is read as the Hub would: its configs name the files."""
    path = os.path.expanduser(dataset.path)
    if not is_local(dataset.path):
        return _builder_files(dataset.path, dataset, revision, param)
    if os.path.isdir(path) and dataset.config and os.path.isfile(os.path.join(path, "README.md")):
        return _builder_files(path, dataset, None, param)
    if os.path.isdir(path):
        files = [str(p) for p in sorted(Path(path).rglob("*")) if p.suffix in LOCAL_SUFFIXES]
    else:
        files = [p for p in sorted(glob.glob(path, recursive=True)) if os.path.isfile(p) and p.endswith(LOCAL_SUFFIXES)]
    if not files:
        raise PipelineError(f"{param}: no .json/.jsonl/.parquet file at {dataset.path!r}")
    return files


HUB_FILE = re.compile(r"hf://datasets/(?P<repo>[^/@]+(?:/[^/@]+)?)(?:@(?P<revision>[^/]+))?/(?P<file>.+)")


def fetch(url: str, directory: Path) -> Path:
    """A Hub data file downloaded (huggingface_hub; Xet-backed repositories through hf_xet) into `directory`;
    a local path as it is."""
    hub = HUB_FILE.fullmatch(url)
    if hub is None:
        return Path(url)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(hub["repo"], hub["file"], repo_type="dataset", revision=hub["revision"],
                                    local_dir=directory, token=os.environ.get("HF_TOKEN")))
    except (ConnectionError, OSError) as exc:  # the files done so far stay for the next run
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RetryableError(f"downloading {url} failed: {reason}; run the stage again to continue") from None


def parquet_rows(path: Path, groups: list[int] | None = None) -> Iterator[Record]:
    """The rows of a parquet file, or of the given row groups of it, in order."""
    parquet = pq.ParquetFile(path)
    for group in range(parquet.metadata.num_row_groups) if groups is None else groups:
        try:
            rows = parquet.read_row_group(group).to_pylist()
        except (pa.ArrowException, OSError) as exc:  # not parquet, or cut off: its rows cannot be told apart
            raise PipelineError(f"{path}: unreadable parquet row group {group}: {exc}") from None
        for number, row in enumerate(rows, start=1):
            yield Record(f"{path}:row group {group} row {number}", row)


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


def read_file(path: Path) -> Iterator[Record]:
    """Every raw record of a local file, in order."""
    if path.suffix == ".parquet":
        try:
            pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise PipelineError(f"{path}: unreadable parquet: {exc}") from None
        yield from parquet_rows(path)
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
