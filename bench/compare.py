"""Two bench runs side by side: ``python bench/compare.py A.json B.json``.

Prints one markdown table: per step, A's and B's median seconds, the change (B / A), A's and
B's ratio to their raw tool, peak memory, and B's pass/miss. Steps present in only one run
show "—" on the other side. Needs no Django, no database.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(path: str) -> tuple[dict, dict[tuple[str, str], dict]]:
    data = json.loads(Path(path).read_text())
    return data, {(row["step"], row.get("vs") or ""): row for row in data["rows"]}


def fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None or value != value else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args()
    a_run, a = load(args.a)
    b_run, b = load(args.b)
    for name, run in (("A", a_run), ("B", b_run)):
        print(f"{name}: {run['when']}, size {run['size']}, {run['repeats']} repeats, PostgreSQL {run['postgres']}")
    print()
    print("| step | vs | A median s | B median s | B / A | A ratio | B ratio | A peak MiB | B peak MiB | B target |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    keys = list(a) + [k for k in b if k not in a]
    for key in keys:
        ra, rb = a.get(key, {}), b.get(key, {})
        ma, mb = ra.get("median"), rb.get("median")
        change = mb / ma if ma and mb else None
        mark = {True: "✓", False: "✗ miss", None: ""}[rb.get("pass")]
        step, vs = (part.replace("|", "\\|") for part in key)
        print(
            f"| {step} | {vs} | {fmt(ma)} | {fmt(mb)} | {fmt(change, '.2f')} | {fmt(ra.get('ratio'), '.2f')} | "
            f"{fmt(rb.get('ratio'), '.2f')} | {fmt(ra.get('peak_mib'), '.0f')} | {fmt(rb.get('peak_mib'), '.0f')} | "
            f"{rb.get('target', '')} {mark} |"
        )


if __name__ == "__main__":
    main()
