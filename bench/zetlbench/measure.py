"""Measurements: the base class, the @measurement registry (run in registration order) and the
median of repeated runs."""

import statistics


MEASUREMENTS = []


def measurement(cls):
    MEASUREMENTS.append(cls)
    return cls


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def median(values):
    """statistics.median, kept an int when every value is an int and the median is whole
    (row counts stay integers)."""
    m = statistics.median(values)
    if all(isinstance(v, int) for v in values) and m == int(m):
        return int(m)
    return m


# Per-run fields that are labels, not figures: never replaced by a median.
NOT_FIGURES = {"repetition", "exit_code"}


def median_run(runs):
    """The reported figures of repeated runs: every numeric field that all runs have is
    the median of the runs' values (for an even count, the mean of the two middle ones);
    the other fields (texts, lists, nested figures) come from the run with the median
    wall clock (the lower one of the two middle ones for an even count). The spread
    stays next to it: rows/s and wall s of every run, their min and max."""
    n = len(runs)
    out = dict(sorted(runs, key=lambda r: r["wall_s"])[(n - 1) // 2])
    for k, v in list(out.items()):
        if k in NOT_FIGURES or not is_number(v):
            continue
        vals = [r.get(k) for r in runs]
        if all(is_number(x) for x in vals):
            m = median(vals)
            out[k] = round(m, 4) if isinstance(m, float) else m
    out["median_of_runs"] = n
    out["median_run_repetition"] = out.pop("repetition", None)
    for k in ("rows_per_s", "wall_s"):
        vals = [r.get(k) for r in runs]
        if all(is_number(x) for x in vals):
            out[f"{k}_runs"] = vals
            out[f"{k}_min"] = min(vals)
            out[f"{k}_max"] = max(vals)
    return out


class Measurement:
    """One reader of the workload's WAL (or, for the snapshot workloads, of its tables).
    prepare() before generation, run() after.

    run() returns a dict with at least wall_s and rows; the reported figures are the
    median of the runs (median_run()).
    """

    name = None
    label = None
    enabled_by = None  # an args attribute (or a tuple of them) that must be true; None = always
    kinds = ("changes",)  # the Workload.kind values it measures
    needs_warehouse = False
    live = False  # live_start() before the workload is generated, live_finish() after

    def __init__(self, bench):
        self.b = bench

    @classmethod
    def enabled(cls, args, wl):
        """A flag is on when given (--e2e), or, when not given, if the workload
        turns it on by default (Workload.enables)."""
        if wl.kind not in cls.kinds:
            return False
        if cls.enabled_by is None:
            return True
        names = cls.enabled_by if isinstance(cls.enabled_by, tuple) else (cls.enabled_by,)
        for n in names:
            v = getattr(args, n, None)
            if not (v or (v is None and n in wl.enables)):
                return False
        return True

    def prepare(self, rep):
        pass

    def run(self, rep):
        raise NotImplementedError

    def close(self):
        """Called once at the end of the workload, also after a failure or an
        interrupt: stop whatever the measurement started (a server, ...)."""

    @staticmethod
    def summarize(runs, b):
        return median_run(runs)

    prepare_rank = 1  # lower prepares first (zetl makes the publication others read)


def rates(r, b):
    """Derived per-run rates shared by every measurement. WAL MB/s only where the
    workload's WAL is what was read (not for the snapshot workloads)."""
    wall = r["wall_s"]
    r["rows_per_s"] = round(r["rows"] / wall, 1) if wall > 0 else None
    r["wal_mb_per_s"] = (round(b.wal_bytes / 1e6 / wall, 2)
                         if wall > 0 and b.wl.kind == "changes" else None)
    if "cpu_s" in r and r["rows"]:
        r["cpu_s_per_million_rows"] = round(r["cpu_s"] / r["rows"] * 1e6, 3)
    r["peak_rss_mb"] = round(r["peak_rss_kb"] / 1024, 1)
    return r
