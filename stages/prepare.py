"""prepare: read every configured source into one row schema, as parquet shards per source.

Output: data/prepared/<source>/part-*.parquet and reports/prepare.json (rows read, kept, skipped, bad).
"""
from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.outputs import ShardWriter, atomic_dir, write_json
from pipeline.params import Params, Source
from pipeline.provenance import environment, hub_dataset_revision
from pipeline.sources import BadRow, Skip, is_local, records, to_row
from pipeline.stage import main

OUT = Path("data/prepared")
REPORT = Path("reports/prepare.json")
log = logging.getLogger("prepare")


def prepare_source(source: Source, index: int, out: Path, params: Params) -> dict:
    counts = {"read": 0, "kept": 0, "bad": 0, "skipped": {}}
    first_bad = None
    writer = ShardWriter(out / source.name, params.data.shard_rows)
    for record in tqdm(records(source, index), desc=f"prepare {source.name}", unit=" rows", mininterval=5):
        if source.max_samples is not None and counts["kept"] >= source.max_samples:
            break
        counts["read"] += 1
        try:
            writer.add(to_row(source, record))
            counts["kept"] += 1
        except Skip as skip:
            counts["skipped"][str(skip)] = counts["skipped"].get(str(skip), 0) + 1
        except BadRow as bad:
            counts["bad"] += 1
            first_bad = first_bad or f"{record.location}: {bad}"
    writer.close()
    if counts["read"] == 0:
        raise PipelineError(f"source {source.name!r}: no rows read from {source.path!r}")
    if counts["bad"] > params.data.max_bad_fraction * counts["read"]:
        raise PipelineError(
            f"source {source.name!r}: {counts['bad']} of {counts['read']} rows are bad, more than "
            f"data.max_bad_fraction={params.data.max_bad_fraction}; first: {first_bad}"
        )
    if first_bad:
        log.warning("%s: skipped %d bad rows, first: %s", source.name, counts["bad"], first_bad)
    counts["shards"] = writer.shards
    return counts


def run(params: Params) -> dict:
    report = {"sources": {}, "provenance": environment()}
    with atomic_dir(OUT) as out:
        for index, source in enumerate(params.data.sources):
            report["sources"][source.name] = prepare_source(source, index, out, params)
            if not is_local(source.path):
                report["sources"][source.name]["revision"] = hub_dataset_revision(source.path, source.revision)
            log.info("%s: %s", source.name, report["sources"][source.name])
    write_json(REPORT, report)
    return report


if __name__ == "__main__":
    main(run, __doc__)
