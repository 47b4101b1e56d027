"""Output: the markdown table."""


def fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:,.{nd}f}"
    return str(v)


SUMMARY_COLUMNS = [
    ("workload", None, None),
    ("rows", "rows", 0),
    ("WAL MB", "wal_mb", 1),
    ("generate s", "generate_s", 1),
    ("pg_recvlogical rows/s", "baseline_rows_per_s", 0),
    ("zetl rows/s", "zetl_rows_per_s", 0),
    ("zetl / baseline", "ratio_rows_per_s", 2),
    ("pg_recvlogical→/dev/null rows/s", "devnull_rows_per_s", 0),
    ("zetl / devnull", "ratio_vs_devnull", 2),
    ("zetl CSV MB/s", "zetl_raw_mb_per_s", 1),
    ("zetl WAL MB/s", "zetl_wal_mb_per_s", 1),
    ("zetl peak RSS MB", "zetl_peak_rss_mb", 1),
    ("zetl CPU s / M rows", "zetl_cpu_s_per_million_rows", 2),
    ("archive B/row (zstd)", "zetl_compressed_bytes_per_row", 1),
]


def median_of(results):
    """"median of N runs" for a table's caption (N per workload if they differ)."""
    ns = sorted({r["summary"].get("median_of_runs") for r in results} - {None})
    return f"median of {' / '.join(str(n) for n in ns) or '?'} run(s)"


def markdown(results):
    lines = []
    capture = [r for r in results if "baseline_rows_per_s" in r["summary"]]
    if capture:
        lines.append(f"Capture ({median_of(capture)} of each reader; peak RSS: the highest):")
        lines.append("")
        lines.append("| " + " | ".join(c[0] for c in SUMMARY_COLUMNS) + " |")
        lines.append("|" + "|".join("---" if c[1] is None else "---:" for c in SUMMARY_COLUMNS)
                     + "|")
    for res in capture:
        s = res["summary"]
        cells = [res["workload"]] + [fmt(s.get(k), nd) for _, k, nd in SUMMARY_COLUMNS[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    snaps = [r for r in results if r["summary"].get("snapshot")]
    if snaps:
        lines.append("")
        lines.append(f"Initial snapshot, archive only ({median_of(snaps)} of each reader):")
        lines.append("")
        lines.append("| workload | rows | tables | snapshot_workers | source COPY rows/s "
                     "(workers conn.) | source COPY rows/s (1 conn.) | zetl rows/s "
                     "| zetl / COPY | zetl / COPY 1 conn. | zetl / COPY per run "
                     "| zetl snapshot-only rows/s | zetl wall s | zetl peak RSS MB "
                     "| zetl CPU s / M rows | archive B/row | rows match |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:"
                     "|---:|---|")
        for res in snaps:
            x = res["summary"]["snapshot"]
            lines.append(f"| {res['workload']} | {fmt(x['rows'])} | {fmt(x['tables'])} "
                         f"| {fmt(x['snapshot_workers'])} | {fmt(x['copy_rows_per_s'])} "
                         f"| {fmt(x['copy_single_rows_per_s'])} | {fmt(x['zetl_rows_per_s'])} "
                         f"| {fmt(x['ratio_vs_copy'], 2)} "
                         f"| {fmt(x['ratio_vs_copy_single'], 2)} "
                         f"| {', '.join(fmt(v, 2) for v in x['ratio_vs_copy_per_rep'])} "
                         f"| {fmt(x['zetl_snapshot_only_rows_per_s'])} "
                         f"| {fmt(x['zetl_wall_s'], 2)} | {fmt(x['zetl_peak_rss_mb'], 1)} "
                         f"| {fmt(x['zetl_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(x['archive_bytes_per_row'], 1)} | {fmt(x['rows_match'])} |")
    tenants = [r for r in results if r["summary"].get("new_tenant")]
    if tenants:
        lines.append("")
        lines.append(f"New tenant while zetl runs ({median_of(tenants)}, one new tenant each):")
        lines.append("")
        lines.append("| workload | rows | refresh_ms | s to warehouse | min s | max s "
                     "| every run s | found s | found → in warehouse s | snapshot s (log) | verify "
                     "| zetl daemon peak RSS MB |")
        lines.append("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|")
        for res in tenants:
            x = res["summary"]["new_tenant"]
            v = x["verify_exit_code"]
            lines.append(f"| {res['workload']} | {fmt(x['rows'])} | {fmt(x['refresh_ms'])} "
                         f"| {fmt(x['seconds'], 2)} | {fmt(x['seconds_min'], 2)} "
                         f"| {fmt(x['seconds_max'], 2)} "
                         f"| {', '.join(fmt(s, 2) for s in x['seconds_runs'])} "
                         f"| {fmt(x['discovered_s'], 2)} "
                         f"| {fmt(x['after_discovery_s'], 2)} | {fmt(x['snapshot_s'], 1)} "
                         f"| {'–' if v is None else 'exit 0' if v == 0 else f'exit {v} FAILED'} "
                         f"| {fmt((x.get('daemon') or {}).get('peak_rss_mb'), 1)} |")
    lines.append("")
    lines.append("Every run:")
    lines.append("")
    lines.append("| workload | reader | run | rows | wall s | rows/s | WAL MB/s | CPU s "
                 "| peak RSS MB |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for res in results:
        for name, runs in res["runs"].items():
            for r in runs:
                if "rows_per_s" not in r or "lag" in r:
                    continue
                lines.append(f"| {res['workload']} | {name} | {r['repetition']} | "
                             f"{fmt(r['rows'])} | {fmt(r['wall_s'], 2)} | "
                             f"{fmt(r['rows_per_s'])} | {fmt(r['wal_mb_per_s'], 1)} | "
                             f"{fmt(r.get('cpu_s'), 2)} | {fmt(r.get('peak_rss_mb'), 1)} |")
    e2e = [r for r in results if r["summary"].get("e2e")]
    if e2e:
        lines.append("")
        lines.append(f"End to end ({median_of(e2e)} of each; peak RSS: the highest):")
        lines.append("")
        lines.append("| workload | rows | zetl e2e rows/s | e2e wall s | bare COPY rows/s "
                     "| e2e / bare COPY | verify | zetl peak RSS MB | zetl CPU s / M rows "
                     "| warehouse CPU s / M rows | bare COPY wh CPU s / M rows "
                     "| archive B/row | batches | warehouse rows |")
        lines.append("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for res in e2e:
            e = res["summary"]["e2e"]
            ver = ", ".join("exit 0" if c == 0 else f"exit {c} FAILED"
                            for c in e["verify_exit_codes"])
            lines.append(f"| {res['workload']} | {fmt(e['rows'])} | {fmt(e['e2e_rows_per_s'])} "
                         f"| {fmt(e['e2e_wall_s'], 2)} | {fmt(e.get('bare_copy_rows_per_s'))} "
                         f"| {fmt(e.get('ratio_vs_bare_copy'), 2)} | {ver} "
                         f"| {fmt(e['peak_rss_mb'], 1)} "
                         f"| {fmt(e['zetl_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(e['warehouse_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(e.get('bare_copy_warehouse_cpu_s_per_million_rows'), 2)} "
                         f"| {fmt(e['archive_bytes_per_row'], 1)} | {fmt(e['batches'])} "
                         f"| {fmt(e['warehouse_rows'])} |")
    s3s = [r for r in results if r["summary"].get("s3")]
    if s3s:
        lines.append("")
        lines.append(f"S3 archive ({median_of(s3s)} of each):")
        lines.append("")
        lines.append("| workload | rows | file archive rows/s | S3 archive rows/s | S3 / file "
                     "| S3 / file per run | rows match | file CPU s / M rows "
                     "| S3 CPU s / M rows | s3rver CPU s | file peak RSS MB | S3 peak RSS MB "
                     "| batches | S3 objects | archive B/row |")
        lines.append("|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for res in s3s:
            x = res["summary"]["s3"]
            lines.append(f"| {res['workload']} | {fmt(x['rows'])} | {fmt(x['file_rows_per_s'])} "
                         f"| {fmt(x['s3_rows_per_s'])} | {fmt(x['ratio'], 2)} "
                         f"| {', '.join(fmt(v, 2) for v in x['ratio_same_rep'])} "
                         f"| {fmt(x['rows_match'])} "
                         f"| {fmt(x['file_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(x['s3_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(x['s3rver_cpu_s'], 2)} | {fmt(x['file_peak_rss_mb'], 1)} "
                         f"| {fmt(x['s3_peak_rss_mb'], 1)} | {fmt(x['batches'])} "
                         f"| {fmt(x['objects'])} | {fmt(x['archive_bytes_per_row'], 1)} |")
    kafkas = [r for r in results if r["summary"].get("kafka")]
    if kafkas:
        lines.append("")
        lines.append(f"Kafka, zetl to build/kafka-mock against zetl to the archive only, same WAL "
                     f"({median_of(kafkas)} of each; peak RSS: the highest):")
        lines.append("")
        lines.append("| workload | rows | messages | Kafka msgs/s | archive rows/s "
                     "| Kafka / archive | Kafka / archive per run | rows, messages match "
                     "| Kafka wall s | archive wall s | Kafka peak RSS MB | archive peak RSS MB | Kafka CPU s / M msgs "
                     "| archive CPU s / M rows | mock CPU s / M msgs | transactions "
                     "| key B | value B |")
        lines.append("|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:"
                     "|---:|---:|---:|")
        for res in kafkas:
            x = res["summary"]["kafka"]
            lines.append(f"| {res['workload']} | {fmt(x['rows'])} | {fmt(x['messages'])} "
                         f"| {fmt(x['kafka_messages_per_s'])} | {fmt(x['archive_rows_per_s'])} "
                         f"| {fmt(x['ratio'], 2)} "
                         f"| {', '.join(fmt(v, 2) for v in x['ratio_per_rep'])} "
                         f"| {fmt(x['rows_match'])}, {fmt(x['messages_match'])} "
                         f"| {fmt(x['kafka_wall_s'], 2)} "
                         f"| {fmt(x['archive_wall_s'], 2)} | {fmt(x['kafka_peak_rss_mb'], 1)} "
                         f"| {fmt(x['archive_peak_rss_mb'], 1)} "
                         f"| {fmt(x['kafka_cpu_s_per_million_messages'], 2)} "
                         f"| {fmt(x['archive_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(x['mock_cpu_s_per_million_messages'], 2)} "
                         f"| {fmt(x['transactions'])} | {fmt(x['avg_key_bytes'], 1)} "
                         f"| {fmt(x['avg_value_bytes'], 1)} |")
    lagged = [r for r in results if r["summary"].get("lag")]
    if lagged:
        lines.append("")
        lines.append("Lag (one daemon run, during the workload's generation):")
        lines.append("")
        lines.append("| workload | target rows/s | achieved rows/s | s | changes | batches "
                     "| lag p50 s | p95 s | p99 s | max s | verify | zetl peak RSS MB "
                     "| zetl CPU s / M rows | warehouse CPU s / M rows | archive B/row "
                     "| drain s |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:"
                     "|---:|")
        for res in lagged:
            l = res["summary"]["lag"]
            lines.append(f"| {res['workload']} | {fmt(l['rate'])} "
                         f"| {fmt(l['generate_rows_per_s'])} "
                         f"| {fmt(res['generate']['seconds'], 1)} | {fmt(l['changes'])} "
                         f"| {fmt(l['batches'])} | {fmt(l['p50_s'], 3)} | {fmt(l['p95_s'], 3)} "
                         f"| {fmt(l['p99_s'], 3)} | {fmt(l['max_s'], 3)} "
                         f"| {'exit 0' if l['verify_exit_code'] == 0 else 'exit %s FAILED' % l['verify_exit_code']} "
                         f"| {fmt(l['peak_rss_mb'], 1)} "
                         f"| {fmt(l['zetl_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(l['warehouse_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(l['archive_bytes_per_row'], 1)} "
                         f"| {fmt(l['drain_s_after_generate'], 2)} |")

    def met(ok):
        return "met" if ok else "NOT met"

    for res in results:
        t = res["targets"]
        parts = []
        if "capture_ratio" in t:
            parts.append(f"capture ratio {t['capture_ratio']:.2f} (>= {t['capture_ratio_min']}: "
                         f"{met(t['capture_ratio_met'])}), peak RSS {t['peak_rss_mb']} MB "
                         f"(< {t['peak_rss_mb_max']}: {met(t['peak_rss_met'])})")
        if "e2e_rows_per_s" in t:
            parts.append(f"end to end {t['e2e_rows_per_s']:,.0f} rows/s (>= "
                         f"{t['e2e_rows_per_s_min']:,}: {met(t['e2e_met'])})")
        if "s3_ratio" in t:
            parts.append(f"s3 archive capture {t['s3_ratio']:.2f} x file archive (>= "
                         f"{t['s3_ratio_min']} x file archive: {met(t['s3_met'])})")
        if "kafka_ratio" in t:
            parts.append(f"kafka {t['kafka_messages_per_s']:,.0f} msgs/s (>= "
                         f"{t['kafka_messages_per_s_min']:,}: "
                         f"{met(t['kafka_messages_per_s_met'])}), "
                         f"{t['kafka_ratio']:.2f} x archive-only capture (>= "
                         f"{t['kafka_ratio_min']}: {met(t['kafka_ratio_met'])}), peak RSS "
                         f"{t['kafka_peak_rss_mb']} MB (< {t['kafka_peak_rss_mb_max']}: "
                         f"{met(t['kafka_peak_rss_met'])})")
        if "snapshot_ratio" in t:
            parts.append(f"initial snapshot {t['snapshot_ratio']:.2f} x the source's COPY over "
                         f"{t['snapshot_connections']} connection(s) (>= "
                         f"{t['snapshot_ratio_min']}: {met(t['snapshot_met'])})")
        if "lag_p99_s" in t:
            parts.append(f"lag p99 {t['lag_p99_s']:.3f} s at {fmt(t['lag_rate'])} rows/s "
                         f"(< {t['lag_p99_s_max']} s: {met(t['lag_met'])})")
        if parts:
            lines.append("")
            lines.append(f"{res['workload']} targets: " + "; ".join(parts))
    whs = sorted({r["warehouse"]["mode"] for r in results if r.get("warehouse")})
    if whs:
        lines.append("")
        lines.append("warehouse: " + ", ".join(
            {"cluster": "a second throwaway PostgreSQL cluster on the same machine",
             "database": "a database in the source's cluster",
             "external": "--warehouse-dsn"}[w] for w in whs))
    m = results[0]["machine"] if results else {}
    if m:
        lines.append("")
        lines.append(f"machine: {m['nproc']} CPU ({m['cpu']}), {m['mem_total']}, Linux "
                     f"{m['kernel']}; {m['postgresql'].split(' on ')[0]}; "
                     f"{m['zetl_version']} ({m['zetl_git']})")
    return "\n".join(lines).lstrip("\n")
