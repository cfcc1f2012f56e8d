"""Generate the README's performance table from the committed benchmark records; never type it by hand.

Reads ``benchmarks/results/<device>/<date>-<what>.json`` (records in ``vitdata.bench.record.RECORD_FORMAT``,
through its one reader), keeps
the newest record of each (device, benchmark, ``settings.series`` when a record names one), and renders one Markdown table in which every figure
names its device and the commit it was measured at. Prints the table; with ``--write`` replaces the
part of README.md between ``<!-- perf-table:start -->`` and ``<!-- perf-table:end -->``.

    python benchmarks/readme_table.py [--results benchmarks/results] [--write [--readme README.md]] [--all]
"""
from __future__ import annotations

import argparse
import os
import sys

from vitdata.bench import record

HERE = os.path.dirname(os.path.abspath(__file__))
START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
WHATS = ("loader", "step", "kernels")


def load_records(results: str, link_base: str | None = None) -> list[dict]:
    """Every record under ``results/<device>/`` (read by ``vitdata.bench.record.load_records``, the one reader),
    with ``_path`` made relative to ``link_base`` (default the repository root, where README.md is). Files
    that are not records are named on stderr and left out."""
    link_base = link_base or os.path.dirname(HERE)
    out = record.load_records(results, on_error=lambda e: print(f"readme_table: skipping {e}", file=sys.stderr))
    for rec in out:
        rec["_path"] = os.path.relpath(rec["_path"], os.path.abspath(link_base))
    return out


def newest(records: list[dict]) -> list[dict]:
    """The newest record of each (device, benchmark); loader and decode records also per data set (its folder);
    a record whose ``settings.series`` names a series (a complement to the main record: other runs, another
    batch size) only supersedes records of that series."""
    best: dict[tuple, dict] = {}
    for r in records:
        data = os.path.basename(os.path.normpath(r.get("settings", {}).get("data") or "")) \
            if r.get("what") in ("loader", "decode") else ""
        key = (r["_device"], r.get("what"), data, r.get("settings", {}).get("series") or "")
        if key not in best or (r.get("date") or "") >= (best[key].get("date") or ""):
            best[key] = r
    return list(best.values())


def device_name(rec: dict) -> str:
    env = rec["environment"]
    if env.get("gpu"):
        return env["gpu"]
    cores, usable = env.get("cpu_count"), env.get("cpus_usable")
    if cores and usable and usable < cores:   # pinned to some cores (taskset): say how many it had
        return f"CPU only ({usable} of {cores} cores)"
    return f"CPU only ({cores} cores)" if cores else "CPU only"


def commit_of(rec: dict) -> str:
    c = rec["environment"].get("commit")
    if not c:
        return "unknown"
    return c[:10] + (" (dirty)" if c.endswith("-dirty") else "")


def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


def rows_of(rec: dict) -> list[tuple[str, str, str]]:
    """(what was measured, figure, comparison) lines for one record."""
    what = rec.get("what")
    s = rec.get("settings", {})
    lines = []
    if what not in WHATS and rec.get("headline"):  # any other benchmark states its own lines
        lines = [(h["measured"], h["figure"], h.get("compared", "")) for h in rec["headline"]]
    elif what == "loader" and len(s.get("sizes") or []) > 1:
        lines = _loader_sizes_rows(rec)
    elif what == "loader":
        setup = (f"{s.get('size')} px, batch {s.get('batch_size')}, {s.get('dtype')}, {s.get('workers')} workers / "
                 f"{s.get('threads')} threads")
        base = rec.get("baseline_row", 4)
        for r in sorted(rec.get("rows", []), key=lambda r: r["row"]):
            ratio = r.get("ratio_to_row4")
            conf = r.get("details", {}).get("config", {})
            own, threads = conf.get("num_workers"), conf.get("num_threads", s.get("threads"))
            row_setup = setup if own is None or (own, threads) == (s.get("workers"), s.get("threads")) else (
                f"{s.get('size')} px, batch {s.get('batch_size')}, {s.get('dtype')}, "
                + (f"DALI source in-thread / {threads} threads" if own == 0 else f"{own} workers / {threads} threads"))
            lines.append((f"loader ({r['row']}) {r['name']}; {row_setup}",
                          f"{_fmt(r['images_per_s'])} images/s (spread {r['spread_pct']:.0f}%)",
                          f"{ratio:.2f}x row ({base})" if ratio is not None else "n/a"))
        for r in sorted(rec.get("skipped", []), key=lambda r: r["row"]):
            lines.append((f"loader ({r['row']}) {r['name']}", "skipped", r["reason"]))
    elif what == "step":
        feeds = rec.get("feeds", {})
        setup = f"{s.get('model')} {s.get('size')} px, batch {s.get('batch_size')}, {s.get('precision')}"
        syn = feeds.get("synthetic", {}).get("step_s_median")
        for name, f in feeds.items():
            rel = f"{f['step_s_median'] / syn:.3f}x synthetic step" if syn and name != "synthetic" else "baseline"
            lines.append((f"step, fed by {name}; {setup}",
                          f"data-wait {100 * f['data_wait_fraction']:.2f}% of {1000 * f['step_s_median']:.1f} ms",
                          rel))
        for sk in rec.get("skipped", []):
            lines.append((f"step, fed by {sk['feed']}", "skipped", sk["reason"]))
    elif what == "kernels":
        st = s
        for section, title in (("lowpass_crop", f"low-pass crop {st.get('size')}->{st.get('crop')}"),
                               ("patch_erase", f"PatchErasing {st.get('size')} px, ratio {st.get('ratio')}")):
            for k in rec.get(section, []):
                pct = k.get("gb_per_s_pct_of_peak")
                speed = k.get("speedup_vs_baseline")
                lines.append((f"{title}: {k['name']}; batch {st.get('batch')}, {st.get('dtype')}",
                              f"{k['gb_per_s']:,.1f} GB/s" + (f" ({pct:.0f}% of peak)" if pct is not None else ""),
                              f"{speed:.2f}x baseline" if isinstance(speed, (int, float)) else ""))
    return lines


def _data_name(path: str | None) -> str:
    """A data set's folder name; a split folder (train, val) is named with its parent (imagenette/train)."""
    parts = os.path.normpath(path or "").split(os.sep)
    return "/".join(parts[-2:]) if parts[-1] in ("train", "val", "test") and len(parts) > 1 else parts[-1]


def _loader_sizes_rows(rec: dict) -> list[tuple[str, str, str]]:
    """A loader record run at several sizes: per row, its figure at the largest size against row 4 (row 1 also
    against row 7), and its cost per image at each size against its cost at the largest."""
    s = rec["settings"]
    sizes, top = sorted(s["sizes"]), max(s["sizes"])
    data = _data_name(s.get("data"))
    how = (f"{data} ({s.get('samples')} photos{', cycled' if s.get('cycled', 1) > 1 else ''}), batch "
           f"{s.get('batch_size')}, {s.get('dtype')}; load {s.get('load_avg_1m_start') or 0:.1f} at start"
           + (f"; data: {s['data_note']}" if s.get("data_note") else ""))
    lines = []
    for row in sorted({r["row"] for r in rec["rows"]}):
        by = {r["size"]: r for r in rec["rows"] if r["row"] == row}
        if top not in by or row == 6:
            continue
        r = by[top]
        vs = [f"{r['ratio_to_row4']:.2f}x row (4)" if r.get("ratio_to_row4") is not None else "n/a"]
        if r.get("ratio_to_row7") is not None:
            vs.append(f"{r['ratio_to_row7']:.2f}x row (7)")
        costs = " / ".join(f"{by[z]['cost_vs_largest']:.2f}" if z in by else "-" for z in sizes)
        lines.append((f"loader ({row}) {r['name']}; {how}",
                      f"{_fmt(r['images_per_s'])} images/s at {top} px (spread {r['spread_pct']:.0f}%)",
                      f"{', '.join(vs)} at {top} px; cost per image at {'/'.join(map(str, sizes))} px: {costs} "
                      f"of {top} px"))
    for r in sorted(rec.get("skipped", []), key=lambda r: r["row"]):
        if r.get("size") == top:
            lines.append((f"loader ({r['row']}) {r['name']}", "skipped", r["reason"]))
    return lines


def render(records: list[dict]) -> str:
    records = [r for r in records if r.get("what") in WHATS or r.get("headline")]
    if not records:
        return "_No benchmark records yet: run `vitdata bench` and commit `benchmarks/results/`._"
    order = {w: i for i, w in enumerate(WHATS)}
    records.sort(key=lambda r: (r["_device"] == "cpu", r["_device"], order.get(r["what"], len(order)), r.get("what") or "",
                                r.get("date") or ""))
    out = ["| device | measured | figure | compared | commit | record |", "| --- | --- | --- | --- | --- | --- |"]
    for rec in records:
        dev, commit = device_name(rec), commit_of(rec)
        link = f"[{os.path.basename(rec['_path'])}]({rec['_path']})"
        try:
            lines = rows_of(rec)
        except (KeyError, TypeError, ValueError) as e:
            print(f"readme_table: {rec['_path']} is not in the expected format ({type(e).__name__}: {e}); "
                  "left out", file=sys.stderr)
            continue
        for measured, figure, compared in lines:
            cells = [dev, measured, figure, compared, f"`{commit}`", link]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def replace_between(text: str, table: str) -> str:
    """``text`` with everything between the markers replaced by ``table``; ValueError without markers."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"README has no '{START}' ... '{END}' markers")
    return text[:i + len(START)] + "\n" + table + "\n" + text[j:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=os.path.join(HERE, "results"), help="records directory")
    p.add_argument("--readme", default=os.path.join(os.path.dirname(HERE), "README.md"))
    p.add_argument("--write", action="store_true", help="replace the table between the markers in --readme")
    p.add_argument("--all", action="store_true", help="every record, not only the newest per device and benchmark")
    a = p.parse_args(argv)
    records = load_records(a.results, os.path.dirname(os.path.abspath(a.readme)))
    table = render(records if a.all else newest(records))
    print(table)
    if a.write:
        with open(a.readme, encoding="utf-8") as f:
            text = f.read()
        try:
            new = replace_between(text, table)
        except ValueError as e:
            print(f"readme_table: {e}; add them where the table belongs", file=sys.stderr)
            return 2
        if new != text:
            tmp = a.readme + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(new)
            os.replace(tmp, a.readme)
        print(f"readme_table: wrote {a.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
