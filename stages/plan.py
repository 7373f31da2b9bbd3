"""plan: what the budget buys, before anything is downloaded. Offline, from params alone, in seconds:

    dvc repro plan

`budget.gpu_hours` x `budget.tokens_per_second` x 3600 real tokens can be trained on; divided by
`train.num_train_epochs`, that is the train split's tokens. The sources share them by `weight`; a source that
cannot give its share (it has `rows` rows at most, or `max_samples` fixes it) gives what it has and the rest goes
to the others, by weight. A source's tokens become rows to read through its `tokens_per_row` and `survival`
(the share of rows the filter keeps), times `budget.read_margin`; tokenize then keeps each source's planned
tokens and reports what it really got.

Output: reports/plan.json (the plan, in GPU-hours and USD), data/plan/<source>.json (what prepare reads, of how
many rows, and what tokenize keeps of each source; prices are left out, so a new price reruns nothing after
this stage) and
data/plan/sources.json (the sources in order).
"""
from __future__ import annotations

import logging
import math

from pipeline import paths
from pipeline.atomic import atomic_dir, write_json
from pipeline.params import Params

log = logging.getLogger("plan")


def shares(total: float, params: Params) -> dict[str, dict]:
    """Each source's planned train tokens and rows to read: weights shared out, capped sources' leftovers
    shared again among the others (water filling)."""
    sources = params.data.sources
    margin = params.budget.read_margin
    plan: dict[str, dict] = {}
    for name, source in sources.items():  # max_samples: the user decided how many rows
        if source.max_samples is not None:
            rows = min(source.max_samples, source.rows or source.max_samples)
            plan[name] = {"rows_to_read": rows, "tokens": rows * source.survival * source.tokens_per_row,
                          "limited_by": "max_samples"}
    left = max(total - sum(entry["tokens"] for entry in plan.values()), 0.0)
    open_ = [name for name in sources if name not in plan]
    while open_:
        weights = sum(sources[name].weight for name in open_)
        capped = [name for name in open_ if sources[name].rows is not None and
                  left * sources[name].weight / weights > sources[name].rows * sources[name].survival *
                  sources[name].tokens_per_row]
        if not capped:
            break
        for name in capped:  # read whole: it cannot give more
            source = sources[name]
            plan[name] = {"rows_to_read": source.rows, "tokens": source.rows * source.survival * source.tokens_per_row,
                          "limited_by": "rows"}
            left = max(left - plan[name]["tokens"], 0.0)
            open_.remove(name)
    weights = sum(sources[name].weight for name in open_)
    for name in open_:
        source = sources[name]
        tokens = left * source.weight / weights
        rows = math.ceil(tokens / (source.tokens_per_row * source.survival) * margin)
        plan[name] = {"rows_to_read": min(rows, source.rows) if source.rows else rows, "tokens": tokens,
                      "limited_by": None}
    return {name: plan[name] for name in sources}


def run(params: Params) -> dict:
    budget, epochs = params.budget, params.train.num_train_epochs
    trainable = budget.gpu_hours * 3600 * budget.tokens_per_second  # real tokens, all epochs
    per_epoch = trainable / epochs
    planned = shares(per_epoch, params)
    train_tokens = sum(entry["tokens"] for entry in planned.values())
    gpu_hours = train_tokens * epochs / budget.tokens_per_second / 3600
    report = {
        "budget_gpu_hours": budget.gpu_hours,
        "gpus": budget.gpus,
        "tokens_per_second_per_gpu": budget.tokens_per_second,
        "epochs": epochs,
        "train_tokens_bought": round(per_epoch),  # per epoch
        "train_tokens_planned": round(train_tokens),
        "gpu_hours": round(gpu_hours, 2),
        "wall_hours": round(gpu_hours / budget.gpus, 2),
        "usd": round(gpu_hours * budget.usd_per_gpu_hour, 2),
        "sources": {},
    }
    with atomic_dir(paths.PLAN) as out:
        for name, entry in planned.items():
            source = params.data.sources[name]
            report["sources"][name] = {
                "weight": source.weight, "tokens_per_row": source.tokens_per_row, "survival": source.survival,
                "train_tokens": round(entry["tokens"]), "rows_to_read": entry["rows_to_read"],
                "limited_by": entry["limited_by"],
            }
            write_json(out / f"{name}.json", {"rows_to_read": entry["rows_to_read"], "rows": source.rows,
                                               "train_tokens": round(entry["tokens"])})
        write_json(out / "sources.json", {"order": list(planned)})
    write_json(paths.PLAN_REPORT, report)
    print(table(report))
    return report


def table(report: dict) -> str:
    lines = [f"budget: {report['budget_gpu_hours']:g} GPU-hours on {report['gpus']} GPU(s) at "
             f"{report['tokens_per_second_per_gpu']:,.0f} tokens/s each = {report['train_tokens_bought']:,} train "
             f"tokens per epoch, {report['epochs']:g} epoch(s)",
             f"{'source':<14}{'weight':>7}{'train tokens':>15}{'tokens/row':>11}{'survival':>9}{'rows to read':>15}"
             "  limited by"]
    for name, source in report["sources"].items():
        lines.append(f"{name:<14}{source['weight']:>7g}{source['train_tokens']:>15,}{source['tokens_per_row']:>11,.0f}"
                     f"{source['survival']:>9g}{source['rows_to_read']:>15,}  {source['limited_by'] or '-'}")
    lines.append(f"planned: {report['train_tokens_planned']:,} train tokens per epoch, {report['gpu_hours']:,} "
                 f"GPU-hours ({report['wall_hours']:,} hours), ${report['usd']:,}")
    return "\n".join(lines)


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
