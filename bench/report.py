"""The bench's table: its rows' names, the targets and comparisons (``COMPARISONS``, the rules
in one place), the summary of the measured samples into rows, and the markdown table.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable

from sampling import Sample
from startup import MB

# The rows others are compared with.
RAW_FC = "backup: raw pg_dump -Fc -n <schema>"
RAW_PIPE = "backup: raw pipe pg_dump -Z0 | zstd -1 | age"
DBBACKUP = "backup: django-dbbackup -z -n <schema>"
RAW_RESTORE = "restore: raw pg_restore -f - | psql -1"
COPY_TO = "json: psycopg COPY TO (same rows, in-process)"
COPY_FROM = "json: psycopg COPY FROM (one transaction, in-process)"
LOADDATA = "json: loaddata, one transaction (whole process)"
DUMPDATA = "json: dumpdata (whole process)"
# "scale: <what>, at <N> clinics": compared with the same <what> at the smallest N measured
SCALE_ROW = re.compile(r"^(scale: .*), at ([\d,]+) clinics$")
SCALE_TARGET = 1.2  # issue 28: at 10,000 clinics within 1.2x of at 10


def mem_ok(peak: float | None) -> bool | None:
    """The memory target (≤ 100 MiB), or None where the row has no peak."""
    return None if peak is None else peak <= 100


# row -> (the row it is compared with, target text, check(ratio, median, peak_mib, notes) -> bool | None)
COMPARISONS: list[tuple[str, str, str, Callable]] = [
    (
        "pg: ours backup, whole process",
        RAW_FC,
        "≤ 0.30 × pg_dump -Fc; ≤ 100 MB",
        lambda r, m, p, n: r <= 0.30 and mem_ok(p) is not False,
    ),
    ("pg: ours backup, job", RAW_FC, "≤ 0.30 × pg_dump -Fc", lambda r, m, p, n: r <= 0.30),
    ("pg: ours backup, job", RAW_PIPE, "≤ 1.2 × raw pipe", lambda r, m, p, n: r <= 1.2),
    ("pg: ours backup, job", DBBACKUP, "≤ 0.2 × dbbackup", lambda r, m, p, n: r <= 0.2),
    (
        "restore: ours restore, whole process",
        RAW_RESTORE,
        "≤ 1.6 × raw; ≤ 100 MB",
        lambda r, m, p, n: r <= 1.6 and mem_ok(p) is not False,
    ),
    ("restore: ours restore, job incl. safety backup", RAW_RESTORE, "≤ 1.6 × raw", lambda r, m, p, n: r <= 1.6),
    ("restore: ours restore, job after the safety backup", RAW_RESTORE, "≤ 1.15 × raw", lambda r, m, p, n: r <= 1.15),
    ("drill: ours, restore into scratch (whole process)", RAW_RESTORE, "", None),
    ("drill: ours, the drill call (no start-up)", RAW_RESTORE, "≤ 1.15 × raw", lambda r, m, p, n: r <= 1.15),
    ("blocked: longest read wait during a restore", "", "≤ 1 s (size S)", lambda r, m, p, n: m <= 1.0),
    ("upload: file accepted + restored (whole process)", "", "≤ 100 MB", lambda r, m, p, n: mem_ok(p)),
    ("json: ours backup, job", COPY_TO, "≤ 3 × COPY TO", lambda r, m, p, n: r <= 3),
    ("json: ours backup, whole process", DUMPDATA, "", None),
    ("json: ours restore, job after the safety backup", COPY_FROM, "≤ 3 × COPY FROM", lambda r, m, p, n: r <= 3),
    (
        "json: ours restore, whole process",
        LOADDATA,
        "≤ 0.05 × loaddata, exact",
        lambda r, m, p, n: r <= 0.05 and n.get("exact") is True,
    ),
    ("json: ours restore, job incl. safety backup", COPY_FROM, "", None),
]


def row_stats(samples: list[Sample]) -> dict:
    """One row's numbers over its repeats; the notes are those of the sample with the highest peak."""
    secs = [s.seconds for s in samples]
    peaks = [s.peak for s in samples if s.peak]
    sizes = [s.size for s in samples if s.size]
    notes = {}
    for s in sorted(samples, key=lambda s: s.peak or 0):  # the peak's breakdown is the highest peak's
        notes.update(s.notes)
    return {
        "min": min(secs),
        "median": statistics.median(secs),
        "peak_mib": max(peaks) / MB if peaks else None,
        "size_mib": statistics.median(sizes) / MB if sizes else None,
        "runs": len(samples),
        "notes": notes,
        "seconds": secs,
    }


def first_row(stats: dict[str, dict], prefix: str) -> str:
    """The first measured row whose name starts with ``prefix``, or ""."""
    return next((n for n in stats if n.startswith(prefix)), "")


def own_row(name: str, stats: dict[str, dict], many: int) -> dict:
    """A row no comparison of ``COMPARISONS`` makes: a base row, or a pages, clone or many row (their own rules)."""
    row = {"step": name, **stats[name], "vs": "", "ratio": None, "target": "", "pass": None}
    if name.startswith("pages:"):
        row["target"] = "p95 ≤ 0.150 s, ≤ 10 queries"
        row["pass"] = row["median"] <= 0.150 and row["notes"].get("queries", 99) <= 10
    elif name.startswith("minute:"):
        row["target"] = "≤ 1 s (of the minute)"
        row["pass"] = row["median"] <= 1.0
    elif name.startswith("clone: ours"):
        base = first_row(stats, "clone: new empty")
        row.update(vs=base, ratio=row["median"] / stats[base]["median"] if base else None)
    elif name.startswith("many: django-q2"):
        many_rules(row, stats, many)
    elif name.startswith("many: the night"):
        night_rules(row, stats, many)
    elif SCALE_ROW.match(name):
        scale_rules(row, stats)
    return row


def scale_point(name: str) -> tuple[str, int]:
    """A scale row's measured thing and its scale point (clinic schemas in the database)."""
    what, point = SCALE_ROW.match(name).groups()
    return what, int(point.replace(",", ""))


def scale_rules(row: dict, stats: dict[str, dict]) -> None:
    """A scale row: its ratio to the same step at the smallest scale point measured; our steps
    (backup, drill, restore) carry the issue's target, the raw tools' rows only their ratio."""
    what, point = scale_point(row["step"])
    points = [p for w, p in (scale_point(n) for n in stats if SCALE_ROW.match(n)) if w == what]
    base_point = min(points)
    if point == base_point:
        return
    base = f"{what}, at {base_point:,} clinics"
    row.update(vs=base, ratio=row["median"] / stats[base]["median"])
    if what.startswith("scale: ours"):
        row["target"] = f"≤ {SCALE_TARGET} × at {base_point:,}"
        row["pass"] = row["ratio"] <= SCALE_TARGET


def many_rules(row: dict, stats: dict[str, dict], many: int) -> None:
    """A django-q2 row of the many group: its overhead per clinic over the raw loop; 1 worker is
    compared with the raw loop, 2 workers with 1 worker."""
    raw = first_row(stats, "many: raw")
    one = first_row(stats, "many: django-q2, 1 worker,")
    if raw:
        per = (row["notes"]["first start to last end s"] - stats[raw]["median"]) / many
        row["notes"]["overhead ms/clinic (span - raw)"] = round(per * 1000)
    if ", 1 worker," in row["step"] and raw:
        row.update(vs=raw, ratio=row["median"] / stats[raw]["median"], target="overhead ≤ 100 ms/clinic")
        row["pass"] = row["notes"]["overhead ms/clinic (span - raw)"] <= 100
    elif one:
        row.update(vs=one, ratio=row["median"] / stats[one]["median"], target="≤ 0.625 × 1 worker (≥ 1.6× faster)")
        row["pass"] = row["ratio"] <= 0.625


NIGHT_CLINICS, NIGHT_TARGET_S = 10_000, 3600  # issue 28: a night of 10,000 small clinics, 2 workers, < 1 hour


def night_rules(row: dict, stats: dict[str, dict], many: int) -> None:
    """The night as the dispatcher hands it out: compared with every backup requested at once
    (2 workers), and its pace per clinic carried to 10,000 clinics against the hour. The night
    over two clusters is compared with the one cluster's (the speed-up more machines give)."""
    if "clusters of" in row["step"]:
        one = first_row(stats, "many: the night (dispatcher, 2 workers)")
        if one:
            row.update(vs=one, ratio=row["median"] / stats[one]["median"], target="speed-up vs 1 cluster")
        return
    at_once = first_row(stats, "many: django-q2, 2 workers,")
    if at_once:
        row.update(vs=at_once, ratio=row["median"] / stats[at_once]["median"])
    projected = row["median"] / many * NIGHT_CLINICS
    row["notes"][f"{NIGHT_CLINICS:,} clinics at this pace s"] = round(projected)
    row["target"] = f"{NIGHT_CLINICS:,} clinics ≤ {NIGHT_TARGET_S} s"
    row["pass"] = projected <= NIGHT_TARGET_S


def compared_rows(base: str, stats: dict[str, dict]) -> list[dict]:
    """The rows ``COMPARISONS`` compares with ``base``, measured, with their ratio and mark."""
    rows = []
    for ours, compared_with, target, check in COMPARISONS:
        if compared_with != base or ours not in stats:
            continue
        r = dict(stats[ours])
        ratio = r["median"] / stats[base]["median"]
        ok = check(ratio, r["median"], r["peak_mib"], r["notes"]) if check else None
        rows.append({"step": ours, **r, "vs": base, "ratio": ratio, "target": target, "pass": ok})
    return rows


def unmatched_rows(stats: dict[str, dict], rows: list[dict]) -> list[dict]:
    """Targets without a comparison row, or whose base is missing (not measured)."""
    done = {r["step"] for r in rows}
    extra = []
    for ours, base, target, check in COMPARISONS:
        if ours in stats and ours not in done:
            done.add(ours)
            r = dict(stats[ours])
            ok = check(None, r["median"], r["peak_mib"], r["notes"]) if check and not base else None
            extra.append(
                {"step": ours, **r, "vs": base and f"{base} (missing)", "ratio": None, "target": target, "pass": ok}
            )
    return extra


def missing_row(step: str) -> dict:
    """An empty row for a step that could not run (a tool or package missing)."""
    empty = dict.fromkeys(["min", "median", "peak_mib", "size_mib", "ratio", "pass"])
    return {"step": step, **empty, "runs": 0, "notes": {}, "vs": "", "target": ""}


def summarize(results: dict[str, list[Sample]], many: int, missing: list[str]) -> list[dict]:
    """The table's rows: the measured rows in the order first measured, each followed by the
    rows compared with it; then targets whose base is missing, then the steps that could not run."""
    stats = {name: row_stats(samples) for name, samples in results.items()}
    compared = {c[0] for c in COMPARISONS}
    rows = []
    for name in results:
        if name in compared or SCALE_ROW.match(name):
            continue
        rows.append(own_row(name, stats, many))
        rows += compared_rows(name, stats)
    rows += unmatched_rows(stats, rows)
    # the scale rows last, each step's points together, smallest first
    scale = [n for n in results if SCALE_ROW.match(n)]
    kinds = list(dict.fromkeys(scale_point(n)[0] for n in scale))
    scale.sort(key=lambda n: (kinds.index(scale_point(n)[0]), scale_point(n)[1]))
    rows += [own_row(name, stats, many) for name in scale]
    return rows + [missing_row(step) for step in missing]


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for the table; "—" for none (or NaN, a failed step)."""
    return "—" if value is None or value != value else format(value, spec)


def short(name: str) -> str:
    """A row's short name for the "vs" column."""
    names = {RAW_FC: "pg_dump -Fc", RAW_PIPE: "raw pipe", DBBACKUP: "dbbackup", RAW_RESTORE: "raw restore"}
    names |= {COPY_TO: "COPY TO", COPY_FROM: "COPY FROM", LOADDATA: "loaddata", DUMPDATA: "dumpdata"}
    if SCALE_ROW.match(name):
        return f"at {scale_point(name)[1]:,}"
    return names.get(name, name.split(": ", 1)[-1].split(" (")[0].split(",")[0])


def print_table(rows: list[dict]) -> None:
    """The rows as one markdown table on stdout."""
    print("| step | min s | median s | ratio | vs | peak MiB | output MiB | target | | notes |")
    print("|---|---:|---:|---:|---|---:|---:|---|---|---|")
    for r in rows:
        mark = {True: "✓", False: "✗ miss", None: ""}[r["pass"]]
        notes = ", ".join(f"{k} {v}" for k, v in r["notes"].items() if k != "stdout")
        step = r["step"].replace("|", "\\|")
        print(
            f"| {step} | {fmt(r['min'])} | {fmt(r['median'])} | {fmt(r['ratio'], '.2f')} | {short(r['vs'])} | "
            f"{fmt(r['peak_mib'], '.0f')} | {fmt(r['size_mib'], '.1f')} | {r['target']} | {mark} | {notes} |"
        )
