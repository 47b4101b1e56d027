"""Measurements: the base class and the @measurement registry (run in registration order)."""


MEASUREMENTS = []


def measurement(cls):
    MEASUREMENTS.append(cls)
    return cls


class Measurement:
    """One reader of the workload's WAL. prepare() before generation, run() after.

    run() returns a dict with at least wall_s and rows; "best" is the run with
    the lowest wall_s.
    """

    name = None
    label = None
    enabled_by = None  # an args attribute (or a tuple of them) that must be true; None = always
    needs_warehouse = False
    live = False  # live_start() before the workload is generated, live_finish() after

    def __init__(self, bench):
        self.b = bench

    @classmethod
    def enabled(cls, args, wl):
        """A flag is on when given (--e2e), or, when not given, if the workload
        turns it on by default (Workload.enables)."""
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
        best = min(runs, key=lambda r: r["wall_s"])
        return dict(best)

    prepare_rank = 1  # lower prepares first (zetl makes the publication others read)


def rates(r, b):
    """Derived per-run rates shared by every measurement."""
    wall = r["wall_s"]
    r["rows_per_s"] = round(r["rows"] / wall, 1) if wall > 0 else None
    r["wal_mb_per_s"] = round(b.wal_bytes / 1e6 / wall, 2) if wall > 0 else None
    if "cpu_s" in r and r["rows"]:
        r["cpu_s_per_million_rows"] = round(r["cpu_s"] / r["rows"] * 1e6, 3)
    r["peak_rss_mb"] = round(r["peak_rss_kb"] / 1024, 1)
    return r
