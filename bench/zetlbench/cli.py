"""Command line: options, then each workload run, written and reported."""

import argparse
import json
import os
import signal

from .util import HERE, log
from .workloads import WORKLOADS
from .runner import Bench
from .report import markdown
from .plots import plot_lag, plot_summary, plot_workload
# Imported for their @measurement classes: the registration order is the run order.
from . import capture, kafka, e2e, snapshot  # noqa: F401


# `make bench` (bench/run.sh build/zetl with no workload named).
DEFAULT_WORKLOADS = ["insert-1m", "mixed-max", "mixed-lag"]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="zetl capture benchmark: runs workloads, compares zetl with "
                    "pg_recvlogical on the same WAL, writes bench/results/<workload>.json "
                    "and .svg, prints a markdown table.",
        epilog="workloads: " + "; ".join(f"{n}: {c.description}" for n, c in WORKLOADS.items()))
    ap.add_argument("zetl_bin", help="path of the zetl binary (build/zetl)")
    ap.add_argument("workloads", nargs="*", metavar="workload",
                    help=f"one or more of {', '.join(WORKLOADS)} (default: insert-1m)")
    g = ap.add_argument_group("workload size (defaults per workload)")
    g.add_argument("--rows", type=int, help="row changes to generate")
    g.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    g.add_argument("--tenants", type=int, help="number of tenant schemas")
    g.add_argument("--txn-rows", type=int, dest="txn_rows", help="rows per transaction")
    g.add_argument("--rate", type=float,
                   help="mixed: target rows/s (default 5000; 0 = unpaced, needs --rows)")
    g.add_argument("--duration", type=float,
                   help="mixed, pgbench: seconds (mixed: rows = rate x duration)")
    g.add_argument("--preload", type=int, help="mixed: rows per tenant before the run")
    g.add_argument("--scale", type=int, help="pgbench: scale factor per schema (default 1)")
    g.add_argument("--clients", type=int, help="pgbench: clients per schema (default 1)")
    g.add_argument("--snapshot-workers", type=int, dest="snapshot_workers",
                   help="snapshot, new-tenant: zetl's source.snapshot_workers, and the "
                        "connections of the source COPY baseline (default 2, zetl's)")
    g.add_argument("--refresh-ms", type=int, dest="refresh_ms",
                   help="new-tenant: zetl's source.tenants.refresh_ms (default 5000, zetl's)")
    m = ap.add_argument_group("method")
    m.add_argument("--repeat", type=int, default=3,
                   help="runs of each reader on the same WAL (new-tenant: new tenants, one "
                        "after another); the median is reported (default 3)")
    m.add_argument("--baseline-proto", type=int, dest="baseline_proto",
                   help="pgoutput proto_version for pg_recvlogical (default: what zetl uses)")
    m.add_argument("--baseline-streaming", dest="baseline_streaming",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="pass streaming=on to pg_recvlogical as zetl does (default on)")
    m.add_argument("--perf", action="store_true",
                   help="also run zetl once under perf record -g; writes results/<w>.perf.txt "
                        "(with --kafka also one run to Kafka: results/<w>.kafka.perf.txt)")
    m.add_argument("--s3", action="store_true",
                   help="also run zetl with an S3 archive on s3rver (loopback; needs "
                        "node_modules from scripts/deps.sh) and report its rows/s against "
                        "the file archive's (target: >= 0.8 x)")
    m.add_argument("--kafka", action=argparse.BooleanOptionalAction, default=None,
                   help="also run zetl publishing to Kafka only (a fresh build/kafka-mock next "
                        "to zetl_bin per run, Avro) on its own slot over the same WAL, and "
                        "report its messages/s against the archive-only zetl run of the same "
                        "repetition (targets: >= 500,000 msgs/s, >= 0.8 x; needs kcat; "
                        "default: on for kafka)")
    m.add_argument("--timeout", type=float, default=7200, help="seconds per reader run")
    e = ap.add_argument_group("end to end (PostgreSQL warehouse)")
    e.add_argument("--e2e", action=argparse.BooleanOptionalAction, default=None,
                   help="also run zetl with a warehouse (run --once, then verify) and the "
                        "warehouse's bare COPY of the same rows (default: on for mixed-max)")
    e.add_argument("--lag", action=argparse.BooleanOptionalAction, default=None,
                   help="also run zetl as a daemon into the warehouse while the workload is "
                        "generated and measure commit-to-warehouse lag (default: on for "
                        "mixed-lag; meant for paced workloads)")
    e.add_argument("--warehouse", choices=["cluster", "database"], default="cluster",
                   help="cluster: a second throwaway cluster (default); database: a database "
                        "in the source's cluster")
    e.add_argument("--warehouse-dsn", dest="warehouse_dsn",
                   default=os.environ.get("ZETLBENCH_WAREHOUSE_DSN") or None,
                   help="use this existing PostgreSQL server as the warehouse (schemas zb_* "
                        "or zetlbench_* are created and dropped)")
    e.add_argument("--warehouse-explain", dest="warehouse_explain", type=int, metavar="MS",
                   help="diagnostics: auto_explain (analyze, buffers) on the warehouse cluster "
                        "for statements slower than MS; the server log goes to "
                        "results/<w>.warehouse-plans.log (slows the warehouse down)")
    e.add_argument("--batch-age-ms", dest="batch_age_ms", type=int,
                   help="buffer.max_age_ms for the warehouse runs (default: zetl's, 1000)")
    s = ap.add_argument_group("source")
    s.add_argument("--source-dsn", dest="source_dsn",
                   default=os.environ.get("ZETLBENCH_SOURCE_DSN") or None,
                   help="(or env ZETLBENCH_SOURCE_DSN, as `zetl bench --config F` sets it) "
                        "use this existing server instead of a throwaway cluster (needs "
                        "REPLICATION and CREATE; objects are prefixed zetlbench_ and dropped)")
    s.add_argument("--schema-prefix", dest="schema_prefix",
                   help="tenant schema prefix (default tenant_, or zetlbench_ with "
                        "--source-dsn)")
    o = ap.add_argument_group("output")
    o.add_argument("--results", default=os.path.join(HERE, "results"),
                   help="results directory (default bench/results)")
    o.add_argument("--keep", action="store_true",
                   help="keep the cluster directory, work directory and outputs")
    args = ap.parse_intermixed_args(argv)
    args.workloads = args.workloads or list(DEFAULT_WORKLOADS)
    args.zetl_bin = os.path.abspath(args.zetl_bin)
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload {', '.join(bad)} (choose from {', '.join(WORKLOADS)})")
    if not os.access(args.zetl_bin, os.X_OK):
        ap.error(f"zetl binary {args.zetl_bin} not found or not executable (run make build)")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.snapshot_workers is not None and not 1 <= args.snapshot_workers <= 64:
        ap.error("--snapshot-workers must be 1..64 (zetl's source.snapshot_workers)")
    return args


def main(argv):
    args = parse_args(argv)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    os.makedirs(args.results, exist_ok=True)
    results = []
    try:
        for w in args.workloads:
            b = Bench(args, w, args.zetl_bin, args.results)
            res = b.execute()
            path = os.path.join(args.results, f"{w}.json")
            with open(path, "w") as f:
                json.dump(res, f, indent=2)
                f.write("\n")
            plot_workload(res, os.path.join(args.results, f"{w}.svg"))
            plot_lag(res, os.path.join(args.results, f"{w}.lag.svg"))
            log(f"wrote {path}")
            results.append(res)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if results:
            plot_summary(args.results)
            print(markdown(results), flush=True)
    return 0
