"""zetl benchmark harness: seeded workloads against a throwaway PostgreSQL
cluster (or an existing server), measured with pg_recvlogical (the walsender's
own limit) and with zetl, on the same WAL in the same run.

Python 3 standard library only. Never linked into the daemon: it drives the
`zetl` binary, `psql`, `pg_recvlogical` and `pgbench` as processes. The
entry point stays bench/zetlbench.py (bench/run.sh, `zetl bench`).

Modules, each depending only on those above it:
  util       logging, tool paths, quoting, LSNs
  sources    the source server: a throwaway cluster or an existing one
  procs      timed child processes (wall clock, CPU, RSS)
  pgoutput   counts the rows in pg_recvlogical's output
  workloads  the workloads (@workload)
  measure    the Measurement base class and its registry (@measurement)
  capture    capture measurements: pg_recvlogical, zetl (file, S3, perf)
  s3rver     the s3rver process for the S3 capture
  kafka      zetl publishing to build/kafka-mock against its archive-only capture
  warehouse  the warehouse of the end-to-end measurements
  e2e        end to end: zetl into the warehouse, bare COPY, lag
  snapshot   snapshots: the source's own COPY, zetl's initial snapshot (archive,
             warehouse), a new tenant while the daemon runs
  runner     one workload, start to end (Bench)
  report     the markdown table
  plots      SVG plots (gnuplot)
  cli        options and main()

Adding a workload: subclass Workload in workloads.py, decorate it with
@workload. Adding a measurement (end to end, lag, ...): subclass Measurement,
decorate it with @measurement; it gets a prepare() call before the workload is
generated (create its slot there) and a run() call per repetition afterwards.
Measurements run in registration order: capture's, then kafka's, then e2e's,
then snapshot's (cli imports them in that order). A measurement measures the
workloads whose `kind` is in its `kinds` ("changes" by default; "snapshot",
"new-tenant").
Repeated runs are reported as their median (measure.median_run()).
"""
