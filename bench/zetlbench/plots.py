"""Output: SVG plots through gnuplot."""

import json
import os
import shutil
import subprocess

from .util import log
from .report import fmt


def gnuplot(script, path):
    if not shutil.which("gnuplot"):
        log(f"gnuplot not installed; skipped {path}")
        return False
    p = subprocess.run(["gnuplot"], input=script.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        log(f"gnuplot failed for {path}: {p.stderr.decode(errors='replace')[:500]}")
        return False
    return True


def gp_label(text):
    return text.replace('"', "'")


RUN_COLOR, MEDIAN_COLOR = 0x4472c4, 0xed7d31


def plot_workload(res, path):
    """Left: rows/s of every run of each reader, then (orange) the median the tables
    report. Right: RSS over time of each run."""
    bars = []
    for name, runs in res["runs"].items():
        for r in runs:
            if "rows_per_s" in r and "lag" not in r:
                bars.append((f"{name} #{r['repetition']}", r["rows_per_s"], RUN_COLOR))
        m = (res.get("median") or {}).get(name) or {}
        if m.get("rows_per_s") is not None and "lag" not in m and len(runs) > 1:
            bars.append((f"{name} median of {len(runs)}", m["rows_per_s"], MEDIAN_COLOR))
    series = []
    for name, runs in res["runs"].items():
        for r in runs:
            if r.get("rss_samples_kb"):
                series.append((f"{name} #{r['repetition']}", r["rss_samples_kb"]))
    data = "$bars << EOD\n" + "".join(f'"{gp_label(l)}" {v} {c}\n' for l, v, c in bars) + "EOD\n"
    for i, (_, s) in enumerate(series):
        data += f"$rss{i} << EOD\n" + "".join(f"{t} {kb / 1024:.2f}\n" for t, kb in s) + "EOD\n"
    title = gp_label(f"{res['workload']}: {fmt(res['summary'].get('rows'))} rows, "
                     f"{res['machine']['nproc']} CPU, {res['timestamp']}")
    rss_plot = ", ".join(f'$rss{i} using 1:2 with lines lw 2 title "{gp_label(l)}"'
                         for i, (l, _) in enumerate(series)) or "0 with lines notitle"
    script = f"""{data}
set terminal svg size 1000,420 dynamic enhanced font "sans,11" background rgb "white"
set output "{path}"
set multiplot layout 1,2 title "{title}"
set style fill solid 0.7 border -1
set boxwidth 0.6
set grid ytics
set yrange [0:*]
set ylabel "rows/s"
set title "throughput (each run; orange: the median reported)"
set xtics rotate by -30 noenhanced
plot $bars using 0:2:3:xtic(1) with boxes lc rgb variable notitle, \\
     $bars using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.7 notitle
set title "resident memory over time"
set xtics norotate enhanced
set xlabel "seconds"
set ylabel "RSS MB"
set key bottom right
plot {rss_plot}
unset multiplot
"""
    return gnuplot(script, path)


def plot_lag(res, path):
    """Top: lag percentiles per second of source commit time. Bottom: rows/s committed
    on the source and rows/s made visible in the warehouse, over the same time axis."""
    runs = res["runs"].get("zetl_lag") or []
    if not runs or not runs[0].get("lag", {}).get("series"):
        return False
    series = runs[0]["lag"]["series"]
    l = runs[0]["lag"]

    def v(x):
        return "NaN" if x is None else f"{x:.4f}"

    data = "$lag << EOD\n" + "".join(
        f"{p['t']} {v(p['p50'])} {v(p['p95'])} {v(p['p99'])} {v(p['max'])} "
        f"{p['source_rows']} {p['applied_rows']}\n" for p in series) + "EOD\n"
    title = gp_label(f"{res['workload']}: {fmt(res['parameters'].get('rate'))} rows/s target, "
                     f"{fmt(l['changes'])} changes; lag p50 {l['p50_s']:.2f} s, p99 "
                     f"{l['p99_s']:.2f} s, max {l['max_s']:.2f} s; {res['timestamp']}")
    script = f"""{data}
set terminal svg size 1000,640 dynamic enhanced font "sans,11" background rgb "white"
set output "{path}"
set multiplot layout 2,1 title "{title}"
set grid
set key top left
set xlabel "seconds since the workload started (source commit time)"
set ylabel "commit-to-warehouse lag, s"
set yrange [0:{max(2.5, (l['max_s'] or 0) * 1.1):.2f}]
set title "lag per second of source commits"
plot $lag using 1:5 with lines lw 1 lc rgb "#c00000" title "max", \\
     $lag using 1:4 with lines lw 2 lc rgb "#ed7d31" title "p99", \\
     $lag using 1:3 with lines lw 2 lc rgb "#ffc000" title "p95", \\
     $lag using 1:2 with lines lw 2 lc rgb "#4472c4" title "p50", \\
     2 with lines dt 2 lc rgb "#7f7f7f" title "target p99 2 s"
set title "throughput"
set xlabel "seconds since the workload started"
set ylabel "rows/s"
set yrange [0:*]
plot $lag using 1:6 with steps lw 2 lc rgb "#a5a5a5" title "committed on the source", \\
     $lag using 1:7 with steps lw 2 lc rgb "#4472c4" title "made visible in the warehouse"
unset multiplot
"""
    return gnuplot(script, path)


def plot_summary(results_dir):
    """rows/s per workload (baseline vs zetl) from every results/*.json present."""
    rows = []
    for name in sorted(os.listdir(results_dir)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(results_dir, name)) as f:
                res = json.load(f)
            s = res["summary"]
            n = s.get("median_of_runs")
            label = f"{res['workload']} ({'median of %d' % n if n else 'best run, old JSON'})"
            kafka = (s.get("kafka") or {}).get("kafka_messages_per_s")
            rows.append((label, s["baseline_rows_per_s"], s["zetl_rows_per_s"],
                         "?" if kafka is None else kafka))
        except (OSError, ValueError, KeyError):
            continue
    if not rows:
        return False
    path = os.path.join(results_dir, "summary.svg")
    data = "$d << EOD\n" + "".join(f'"{gp_label(w)}" {b} {z} {k}\n'
                                   for w, b, z, k in rows) + "EOD\n"
    # zetl to Kafka (messages/s) only where a workload measured it.
    kafka = (', \\\n     $d using 4 title "zetl to Kafka (kafka-mock), msgs/s" lc rgb "#70ad47"'
             if any(k != "?" for *_, k in rows) else "")
    script = f"""{data}
set terminal svg size 900,420 dynamic enhanced font "sans,11" background rgb "white"
set output "{path}"
set title "capture throughput per workload (the median of its runs; see each label)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.7 border -1
set grid ytics
set yrange [0:*]
set ylabel "rows/s"
set xtics noenhanced
set datafile missing "?"
plot $d using 2:xtic(1) title "pg\\\\_recvlogical (baseline)" lc rgb "#a5a5a5", \\
     $d using 3 title "zetl capture" lc rgb "#4472c4"{kafka}
"""
    return gnuplot(script, path)
