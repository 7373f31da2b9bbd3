"""prepare: read every configured source into one row schema, as parquet shards per source.

Output: data/prepared/<source>/part-*.parquet and reports/prepare.json (rows read, kept, skipped, bad).
A killed run resumes: shards it completed are kept and reading continues after the last of them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.outputs import STATE, ShardWriter, code_digest, resumable_dir, write_json
from pipeline.params import Params, Source
from pipeline.provenance import environment, hub_dataset_revision
from pipeline.sources import BadRow, Skip, is_local, local_files, records, to_row
from pipeline.stage import main

OUT = Path("data/prepared")
REPORT = Path("reports/prepare.json")
log = logging.getLogger("prepare")


def prepare_source(source: Source, index: int, work: Path, params: Params) -> dict:
    """Read one source into `work/<name>/`, continuing an interrupted run from its last completed shard."""
    state_file = work / STATE / f"{source.name}.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {
        "records": 0, "shards": 0, "complete": False, "first_bad": None,
        "counts": {"read": 0, "kept": 0, "bad": 0, "skipped": {}},
    }
    counts = state["counts"]

    def save(**changes) -> None:
        state.update(changes)
        write_json(state_file, state)

    if not state["complete"]:
        if state["records"]:
            log.info("%s: resuming after %d records in %d shards", source.name, state["records"], state["shards"])
        writer = ShardWriter(work / source.name, params.data.shard_rows, first_shard=state["shards"], background=True)
        position = state["records"]
        stream = records(source, index, start=position)
        for record in tqdm(stream, desc=f"prepare {source.name}", unit=" rows", mininterval=5, initial=position):
            if source.max_samples is not None and counts["kept"] >= source.max_samples:
                break
            position += 1
            counts["read"] += 1
            try:
                row = to_row(source, record)
            except Skip as skip:
                counts["skipped"][str(skip)] = counts["skipped"].get(str(skip), 0) + 1
                continue
            except BadRow as bad:
                counts["bad"] += 1
                state["first_bad"] = state["first_bad"] or f"{record.location}: {bad}"
                continue
            counts["kept"] += 1
            if writer.add(row):  # a shard is complete: a kill from here on loses none of it
                save(records=position, shards=writer.shards)
        writer.close()
        save(records=position, shards=writer.shards, complete=True)
    if counts["read"] == 0:
        raise PipelineError(f"source {source.name!r}: no rows read from {source.path!r}")
    if counts["bad"] > params.data.max_bad_fraction * counts["read"]:
        raise PipelineError(
            f"source {source.name!r}: {counts['bad']} of {counts['read']} rows are bad, more than "
            f"data.max_bad_fraction={params.data.max_bad_fraction}; first: {state['first_bad']}"
        )
    if state["first_bad"]:
        log.warning("%s: skipped %d bad rows, first: %s", source.name, counts["bad"], state["first_bad"])
    return {**counts, "shards": state["shards"]}


def local_inputs(params: Params) -> list[tuple[str, int, int]]:
    """Path, size and modification time of every local source file: a resumed run must read the same files."""
    return [(str(path), path.stat().st_size, path.stat().st_mtime_ns)
            for index, source in enumerate(params.data.sources) if is_local(source.path)
            for path in local_files(source, index)]


def run(params: Params) -> dict:
    report = {"sources": {}, "provenance": environment()}
    files = local_inputs(params)
    # parquet with zstd is smaller than the JSON it is read from; Hub sizes are unknown before streaming
    require_free(OUT.parent, sum(size for _, size, _ in files), "data.sources (local files)", partial=OUT)
    revisions = {source.name: hub_dataset_revision(source.path, source.revision)
                 for source in params.data.sources if not is_local(source.path)}
    fingerprint = {"data": params.data.model_dump(), "files": files, "revisions": revisions,
                   "code": code_digest(__file__)}
    # stream the commit recorded in the report, not whatever the branch points to by the time a source is read
    sources = [source.model_copy(update={"revision": revisions[source.name]}) if revisions.get(source.name)
               else source for source in params.data.sources]
    with resumable_dir(OUT, fingerprint) as work:
        for index, source in enumerate(sources):
            report["sources"][source.name] = prepare_source(source, index, work, params)
            if source.name in revisions:
                report["sources"][source.name]["revision"] = revisions[source.name]
            log.info("%s: %s", source.name, report["sources"][source.name])
    write_json(REPORT, report)
    return report


if __name__ == "__main__":
    main(run, __doc__)
