"""The haystack evaluation's results, as the report reads them: one JSON file per (task, length, seed),
``task<N>_len<L>_seed<S>.json``, holding at least ``{"task": N, "length": L, "seed": S, "results":
{method: {"selection_accuracy": x, ...}}}``; the report shows the median over seeds per method, task and
length. Pure Python: no framework, no plotting."""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("experiments") / "results" / "haystack"
"""Where the haystack evaluation writes its files (relative to the working directory)."""
METHOD_ORDER = ("memsel", "bm25", "recency_prior", "random")
"""Methods shown first, in this order; others follow alphabetically."""
PATTERN = "task*_len*_seed*.json"


def read_results(folder: Path) -> list[dict]:
    """Every readable result file under ``folder`` (none when it does not exist); files that are not of
    the shape above are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob(PATTERN)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records.append({"task": int(data["task"]), "length": int(data["length"]), "seed": data["seed"],
                            "results": {m: float(v["selection_accuracy"]) for m, v in data["results"].items()
                                        if isinstance(v, dict) and isinstance(v.get("selection_accuracy"), (int, float))}})
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("report: skipping haystack file %s: %s", path, e)
    return records


def median_tables(records: list[dict]) -> dict[str, dict]:
    """method -> {"tasks": [...], "lengths": [...], "values": rows (task) x columns (length) of the median
    selection accuracy over seeds (None where no file has it), "seeds": how many seeds at most}."""
    tasks = sorted({r["task"] for r in records})
    lengths = sorted({r["length"] for r in records})
    methods = sorted({m for r in records for m in r["results"]},
                     key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))
    out = {}
    for m in methods:
        cells: dict[tuple[int, int], list[float]] = {}
        for r in records:
            if m in r["results"]:
                cells.setdefault((r["task"], r["length"]), []).append(r["results"][m])
        values = [[statistics.median(cells[(t, n)]) if (t, n) in cells else None for n in lengths] for t in tasks]
        out[m] = {"tasks": tasks, "lengths": lengths, "values": values,
                  "seeds": max((len(v) for v in cells.values()), default=0)}
    return out


def format_table(tables: dict[str, dict]) -> str:
    """The medians as plain text, one block per method (the page shows it under the heatmap)."""
    blocks = []
    for m, t in tables.items():
        head = f"{m:<10}" + "".join(f"{n:>8}" for n in t["lengths"])
        rows = [f"{'task ' + str(task):<10}" + "".join(f"{'-' if v is None else f'{100 * v:.1f}%':>8}" for v in row)
                for task, row in zip(t["tasks"], t["values"])]
        blocks.append("\n".join([head, *rows]))
    return "\n\n".join(blocks)
