"""docs/robustness.md: which findings hold in which world, with which proxy, in k of R replicates,
read from the `findings.txt` of each study run under the protocol (docs/findings.md). Tables in,
a table out: nothing here loads a model."""

from __future__ import annotations

import re
from pathlib import Path

LINE = re.compile(r"^(?P<status>[A-Z]+)\s+(?P<fid>F\d+) (?P<name>[^:]+): (?P<detail>.*?)(; holds in (?P<k>\d+) of (?P<r>\d+) replicates)?$")


def read_findings(path: str | Path) -> list[dict]:
    """The finding lines of a findings.txt (sanity lines and the rest are left out)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        m = LINE.match(line.strip())
        if m:
            rows.append({"fid": m["fid"], "name": m["name"], "status": m["status"],
                         "k": int(m["k"]) if m["k"] else None, "r": int(m["r"]) if m["r"] else None})
    return rows


def robustness_table(studies: dict[str, str]) -> str:
    """A markdown table: a row per finding (in protocol order), a column per study."""
    read = {name: read_findings(path) for name, path in studies.items()}
    order, names = [], {}
    for rows in read.values():
        for r in rows:
            key = (r["fid"], r["name"])
            if key not in names:
                order.append(key)
                names[key] = r["name"]
    order.sort(key=lambda k: (int(k[0][1:]), k[1]))
    head = "| finding | " + " | ".join(read) + " |"
    lines = [head, "|---|" + "---|" * len(read)]
    for key in order:
        cells = []
        for rows in read.values():
            r = next((r for r in rows if (r["fid"], r["name"]) == key), None)
            if r is None:
                cells.append("")
            elif r["status"] == "SKIP":
                cells.append("not testable")
            else:
                cells.append(r["status"] + (f", {r['k']} of {r['r']}" if r["r"] else ""))
        lines.append(f"| {key[0]} {names[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_robustness(studies: dict[str, str], out: str) -> str:
    from .util import atomic_file

    text = ("# Robustness of the findings\n\n"
            "Written by `snakemake robustness --configfile config/experiments/robustness.yaml --allowed-rules "
            "robustness` from each finished study's `findings.txt` (docs/findings.md): the pooled test's result, "
            "then in how many of the study's replicates the finding holds on its own.\n\n"
            + "".join(f"- **{n}**: `{p}`\n" for n, p in studies.items()) + "\n" + robustness_table(studies))
    with atomic_file(out) as tmp:
        Path(tmp).write_text(text)
    return text
