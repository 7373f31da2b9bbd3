"""Local folders laid out exactly like Hub dataset repositories, for tests and the scale rehearsal: the files,
their paths, their columns and the dataset card whose `configs` name them, as `datasets` resolves them.

- FineWeb-2: data/<config>/train/<NNN>_<NNNNN>.parquet with its columns (text, id, dump, url, date, file_path,
  language, language_score, language_script, minhash_cluster_size, top_langs);
- Wikipedia (wikimedia/wikipedia): <config>/train-<NNNNN>-of-<NNNNN>.parquet with id, url, title, text.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

FINEWEB2 = pa.schema([("text", pa.string()), ("id", pa.string()), ("dump", pa.string()), ("url", pa.string()),
                      ("date", pa.string()), ("file_path", pa.string()), ("language", pa.string()),
                      ("language_score", pa.float64()), ("language_script", pa.string()),
                      ("minhash_cluster_size", pa.int64()), ("top_langs", pa.string())])
WIKIPEDIA = pa.schema([("id", pa.string()), ("url", pa.string()), ("title", pa.string()), ("text", pa.string())])


def _card(directory: Path, configs: dict[str, str]) -> None:
    lines = ["---", "configs:"]
    for name, pattern in configs.items():
        lines += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {pattern}"]
    (directory / "README.md").write_text("\n".join([*lines, "---", "# A local copy laid out as on the Hub", ""]))


def _chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def fineweb2_row(text: str, number: int, config: str = "tur_Latn") -> dict:
    dump = f"CC-MAIN-20{13 + number % 11}-{10 + number % 40}"
    return {"text": text, "id": f"<urn:uuid:{number:08x}-0000-4000-8000-{number:012x}>", "dump": dump,
            "url": f"https://ornek{number % 997}.com.tr/yazi/{number}", "date": "2023-06-01T12:00:00Z",
            "file_path": f"s3://commoncrawl/crawl-data/{dump}/segments/{number % 100}/warc/x.warc.gz",
            "language": config.split("_")[0], "language_score": 0.99, "language_script": config.split("_")[1],
            "minhash_cluster_size": 1 + number % 3, "top_langs": json.dumps({f"{config}_score": 0.99})}


def write_fineweb2(directory: Path, texts: Iterable[str], rows_per_file: int, rows_per_group: int,
                   config: str = "tur_Latn") -> list[Path]:
    """FineWeb-2's layout for one config from `texts`; the files written."""
    folder = directory / "data" / config / "train"
    folder.mkdir(parents=True, exist_ok=True)
    rows = (fineweb2_row(text, number, config) for number, text in enumerate(texts))
    files = []
    for index, chunk in enumerate(_chunks(rows, rows_per_file)):
        path = folder / f"{index // 10:03d}_{index % 10:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(chunk, schema=FINEWEB2), path, row_group_size=rows_per_group,
                       compression="zstd")
        files.append(path)
    _card(directory, {config: f"data/{config}/train/*"})
    return files


def write_wikipedia(directory: Path, articles: list[tuple[str, str]], files: int,
                    config: str = "20231101.tr") -> list[Path]:
    """wikimedia/wikipedia's layout for one config from (title, text) pairs."""
    folder = directory / config
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": str(i + 1), "url": f"https://tr.wikipedia.org/wiki/{title.replace(' ', '_')}", "title": title,
             "text": text} for i, (title, text) in enumerate(articles)]
    per_file = -(-len(rows) // files)
    written = []
    for index in range(files):
        path = folder / f"train-{index:05d}-of-{files:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[index * per_file:(index + 1) * per_file], schema=WIKIPEDIA), path)
        written.append(path)
    _card(directory, {config: f"{config}/train-*"})
    return written
