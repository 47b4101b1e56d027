"""Workloads: seeded data generators, registered with @workload."""

import math
import os
import subprocess

from .util import qident, qlit


WORKLOADS = {}


def workload(cls):
    WORKLOADS[cls.name] = cls
    return cls


def tenant_names(prefix, n):
    if n <= 26:
        return [prefix + chr(ord("a") + i) for i in range(n)]
    width = len(str(n))
    return [f"{prefix}{i + 1:0{width}d}" for i in range(n)]


class Workload:
    """A seeded, sized workload over tenant schemas.

    setup() runs before the slots exist (DDL, preloaded data: not measured);
    generate() runs after (its WAL is what both readers decode). Parameters
    come from the command line, falling back to the class's defaults.
    """

    name = None
    description = ""
    defaults = {}
    enables = ()  # measurement flags on by default for this workload ("e2e", "lag")
    # What the measurements read: "changes" (the WAL of generate(): pg_recvlogical, zetl
    # capture, end to end, lag), "snapshot" (the tables setup() filled: COPY, zetl's
    # initial snapshot), "new-tenant" (a tenant created while zetl runs).
    kind = "changes"

    def __init__(self, args, prefix):
        self.p = dict(self.defaults)
        for k in list(self.p):
            v = getattr(args, k, None)
            if v is not None:
                self.p[k] = v
        self.p["seed"] = args.seed
        self.schemas = tenant_names(prefix, self.p["tenants"])

    def params(self):
        return dict(self.p)

    def setup(self, src):
        raise NotImplementedError

    def generate(self, src, work):
        """Generates the workload; returns a dict (at least "rows_expected")."""
        raise NotImplementedError

    def tables(self, src):
        """[(schema, table, [columns])] of the tenant tables, in schema order."""
        rows = src.psql(
            "SELECT n.nspname, c.relname, string_agg(quote_ident(a.attname), ', ' "
            "ORDER BY a.attnum) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relkind = 'r' AND n.nspname = ANY (ARRAY["
            + ",".join(qlit(s) for s in self.schemas) + "]::text[]) GROUP BY 1, 2 ORDER BY 1, 2")
        return [(r[0], r[1], r[2].split(", ")) for r in rows]

    def seed_sql(self):
        # setseed() takes [-1, 1]; any integer seed maps to a fixed value.
        return f"SELECT setseed({(self.p['seed'] % 1000003) / 1000003.0!r});\n"


USERS_DDL = """CREATE SCHEMA {s};
CREATE TABLE {s}.users (id bigint PRIMARY KEY, email text NOT NULL, name text,
                        score numeric(10,2), created_at timestamptz NOT NULL);
"""


USERS_SELECT = """SELECT g, 'user' || g || '@{domain}.example.com',
       initcap(substr(md5(random()::text), 1, 4 + (random() * 24)::int)),
       round((random() * 99999)::numeric, 2),
       timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days'
FROM generate_series({lo}, {hi}) g"""


def split(total, parts):
    """total split into `parts` near-equal integers."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class InsertWorkload(Workload):
    """Inserts into tenant_X.users, in transactions of txn_rows rows.

    spread=True: every transaction inserts into every tenant; else each
    transaction goes to one tenant, round robin.
    """

    spread = True
    table_ddl = USERS_DDL

    def setup(self, src):
        src.psql("".join(self.table_ddl.format(s=qident(s)) for s in self.schemas))

    def insert_sql(self, schema, lo, hi):
        return (f"INSERT INTO {qident(schema)}.users "
                + USERS_SELECT.format(domain=schema.replace("'", ""), lo=lo, hi=hi) + ";\n")

    def generate(self, src, work):
        rows, txn_rows = self.p["rows"], max(1, self.p["txn_rows"])
        next_id = {s: 1 for s in self.schemas}
        parts = [self.seed_sql()]
        done, t = 0, 0
        while done < rows:
            n = min(txn_rows, rows - done)
            targets = ([(s, k) for s, k in zip(self.schemas, split(n, len(self.schemas))) if k]
                       if self.spread else [(self.schemas[t % len(self.schemas)], n)])
            parts.append("BEGIN;\n")
            for s, k in targets:
                parts.append(self.insert_sql(s, next_id[s], next_id[s] + k - 1))
                next_id[s] += k
            parts.append("COMMIT;\n")
            done += n
            t += 1
        src.psql("".join(parts), timeout=self.p.get("timeout", 86400))
        return {"rows_expected": rows, "transactions": t}


@workload
class Insert1M(InsertWorkload):
    name = "insert-1m"
    description = "1,000,000 inserts over 3 tenant schemas in 10 transactions of 100,000 rows"
    defaults = {"rows": 1_000_000, "tenants": 3, "txn_rows": 100_000}
    enables = ("e2e",)


@workload
class Kafka(InsertWorkload):
    """insert-1m's narrow users rows, published to Kafka (the kafka measurement, on by
    default here) beside the archive-only capture of the same WAL."""

    name = "kafka"
    description = ("insert-1m's 1,000,000 narrow users rows over 3 tenants, published by zetl "
                   "to build/kafka-mock as Avro (one message per row) and archived by zetl "
                   "alone, same WAL: messages/s and the ratio to the archive")
    defaults = {"rows": 1_000_000, "tenants": 3, "txn_rows": 100_000}
    enables = ("kafka",)


@workload
class BigTxn(InsertWorkload):
    name = "big-txn"
    description = ("one transaction of 5,000,000 inserts over 3 tenants (streamed by the "
                   "walsender; memory must stay flat)")
    defaults = {"rows": 5_000_000, "tenants": 3, "txn_rows": None}

    def generate(self, src, work):
        self.p["txn_rows"] = self.p["txn_rows"] or self.p["rows"]
        return super().generate(src, work)


@workload
class ManyTenants(InsertWorkload):
    name = "many-tenants"
    description = "200 tenant schemas, small transactions (10 rows, one tenant each)"
    defaults = {"rows": 200_000, "tenants": 200, "txn_rows": 10}
    spread = False


WIDE_TEXT, WIDE_NUM, WIDE_INT, WIDE_BOOL, WIDE_TS = 20, 20, 4, 2, 3  # + id = 50 columns


@workload
class Wide(InsertWorkload):
    name = "wide"
    description = ("50 columns (20 text of 8-72 bytes, 20 numeric(18,4), 4 int, 2 bool, "
                   "3 timestamptz), for bytes/s")
    defaults = {"rows": 200_000, "tenants": 3, "txn_rows": 10_000}

    def setup(self, src):
        cols = (["id bigint PRIMARY KEY"]
                + [f"t{i:02d} text" for i in range(1, WIDE_TEXT + 1)]
                + [f"n{i:02d} numeric(18,4)" for i in range(1, WIDE_NUM + 1)]
                + [f"i{i:02d} integer" for i in range(1, WIDE_INT + 1)]
                + [f"b{i:02d} boolean" for i in range(1, WIDE_BOOL + 1)]
                + [f"ts{i:02d} timestamptz" for i in range(1, WIDE_TS + 1)])
        src.psql("".join(f"CREATE SCHEMA {qident(s)};\nCREATE TABLE {qident(s)}.wide_events ("
                         + ", ".join(cols) + ");\n" for s in self.schemas))

    def insert_sql(self, schema, lo, hi):
        exprs = (["g"]
                 + ["substr(md5(random()::text) || md5(random()::text) || md5(random()::text),"
                    " 1, 8 + (random() * 64)::int)"] * WIDE_TEXT
                 + ["round((random() * 1e9)::numeric, 4)"] * WIDE_NUM
                 + ["(random() * 2e9)::bigint::int - 1000000000"] * WIDE_INT
                 + ["random() < 0.5"] * WIDE_BOOL
                 + ["timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days'"]
                 * WIDE_TS)
        return (f"INSERT INTO {qident(schema)}.wide_events SELECT " + ", ".join(exprs)
                + f" FROM generate_series({lo}, {hi}) g;\n")


@workload
class Mixed(Workload):
    name = "mixed"
    description = ("60/30/10 insert/update/delete in small transactions over 3 tenants at a "
                   "fixed target rate")
    defaults = {"rows": None, "tenants": 3, "txn_rows": 10, "rate": 5000, "duration": 30,
                "preload": 10_000}

    def setup(self, src):
        parts = [self.seed_sql()]
        for s in self.schemas:
            parts.append(USERS_DDL.format(s=qident(s)))
            parts.append(f"INSERT INTO {qident(s)}.users "
                         + USERS_SELECT.format(domain=s.replace("'", ""), lo=1,
                                               hi=self.p["preload"]) + ";\n")
        src.psql("".join(parts))

    def generate(self, src, work):
        if not self.p["rows"] and not self.p["rate"]:
            raise RuntimeError(f"{self.name}: --rate 0 (unpaced) needs --rows")
        rows = self.p["rows"] or int(self.p["rate"] * self.p["duration"])
        self.p["rows"] = rows
        arr = "ARRAY[" + ",".join(qlit(s) for s in self.schemas) + "]::text[]"
        # One session, paced server-side: after each COMMIT it sleeps until
        # rows_done / rate seconds have passed. Updates and deletes pick an
        # existing row (the first id at or above a random one), so every
        # operation changes exactly one row.
        sql = self.seed_sql() + f"""
DO $bench$
DECLARE
  schemas text[] := {arr};
  nt int := {len(self.schemas)};
  next_id bigint[] := array_fill({self.p['preload'] + 1}::bigint, ARRAY[{len(self.schemas)}]);
  total bigint := {rows};
  txn_rows int := {max(1, self.p['txn_rows'])};
  rate float8 := {float(self.p['rate'])};
  t0 timestamptz := clock_timestamp();
  done bigint := 0;
  ti int; r float8; target bigint; ahead float8; victim bigint;
BEGIN
  WHILE done < total LOOP
    FOR k IN 1 .. least(txn_rows, total - done) LOOP
      ti := 1 + floor(random() * nt)::int;
      r := random();
      IF r < 0.6 THEN
        EXECUTE format('INSERT INTO %I.users VALUES ($1, $2, $3, $4, $5)', schemas[ti])
          USING next_id[ti], 'user' || next_id[ti] || '@example.com',
                initcap(substr(md5(random()::text), 1, 4 + (random() * 24)::int)),
                round((random() * 99999)::numeric, 2),
                timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days';
        next_id[ti] := next_id[ti] + 1;
      ELSE
        target := 1 + floor(random() * (next_id[ti] - 1))::bigint;
        EXECUTE format('SELECT coalesce((SELECT min(id) FROM %1$I.users WHERE id >= $1),
                                        (SELECT max(id) FROM %1$I.users))', schemas[ti])
          INTO victim USING target;
        IF r < 0.9 THEN
          EXECUTE format('UPDATE %I.users SET score = $2, name = $3 WHERE id = $1', schemas[ti])
            USING victim, round((random() * 99999)::numeric, 2),
                  initcap(substr(md5(random()::text), 1, 4 + (random() * 24)::int));
        ELSE
          EXECUTE format('DELETE FROM %I.users WHERE id = $1', schemas[ti]) USING victim;
        END IF;
      END IF;
    END LOOP;
    done := least(total, done + txn_rows);
    COMMIT;
    IF rate > 0 THEN  -- rate 0: as fast as the server goes
      ahead := done / rate - extract(epoch FROM clock_timestamp() - t0);
      IF ahead > 0 THEN
        PERFORM pg_sleep(ahead);
      END IF;
    END IF;
  END LOOP;
END
$bench$;
"""
        src.psql(sql)
        return {"rows_expected": rows,
                "transactions": math.ceil(rows / max(1, self.p["txn_rows"]))}


@workload
class MixedMax(Mixed):
    name = "mixed-max"
    description = ("mixed at full speed (no rate limit): 300,000 row changes, 60/30/10 "
                   "insert/update/delete in 10-row transactions over 3 tenants; end to end on")
    defaults = dict(Mixed.defaults, rows=300_000, rate=0)
    enables = ("e2e",)


@workload
class MixedLag(Mixed):
    name = "mixed-lag"
    description = ("mixed at a steady 5,000 rows/s for 60 s with zetl running as a daemon "
                   "into the warehouse: commit-to-warehouse lag")
    defaults = dict(Mixed.defaults, rate=5000, duration=60)
    enables = ("lag",)


@workload
class Snapshot(InsertWorkload):
    name = "snapshot"
    kind = "snapshot"
    description = ("3,000,000 users rows preloaded over 3 tenants before zetl's first start: "
                   "PostgreSQL's own COPY of the tables, zetl's initial snapshot (archive only "
                   "and into the warehouse)")
    defaults = {"rows": 3_000_000, "tenants": 3, "txn_rows": 100_000, "snapshot_workers": 2}
    enables = ("e2e",)

    def setup(self, src):
        """The tables and their rows (insert-1m's generator), then VACUUM ANALYZE: hint
        bits and the visibility map are set and reltuples is known before any reader, so
        the first reader of the first repetition pays no more than the others."""
        super().setup(src)
        self.loaded = super().generate(src, None)
        src.psql("".join(f"VACUUM (ANALYZE) {qident(s)}.users;\n" for s in self.schemas)
                 + "CHECKPOINT;\n", timeout=self.p.get("timeout", 86400))

    def generate(self, src, work):
        # Nothing is generated: what is measured is reading what setup() loaded.
        return dict(self.loaded, rows_expected=self.p["rows"])


@workload
class NewTenant(Workload):
    name = "new-tenant"
    kind = "new-tenant"
    description = ("with zetl running as a daemon into the warehouse, a new tenant schema "
                   "with a 100,000-row users table is created in one transaction: seconds "
                   "until all its rows are in the warehouse (one new tenant per repetition)")
    defaults = {"rows": 100_000, "tenants": 3, "preload": 10_000, "refresh_ms": 5000,
                "snapshot_workers": 2}

    def setup(self, src):
        parts = [self.seed_sql()]
        for s in self.schemas:
            parts.append(USERS_DDL.format(s=qident(s)))
            if self.p["preload"]:
                parts.append(f"INSERT INTO {qident(s)}.users "
                             + USERS_SELECT.format(domain=s.replace("'", ""), lo=1,
                                                   hi=self.p["preload"]) + ";\n")
        src.psql("".join(parts))

    def generate(self, src, work):
        # The measured change is the new tenant of each repetition (new_tenant_sql()).
        return {"rows_expected": 0}

    def new_tenant_schema(self, prefix, rep):
        return f"{prefix}new{rep}"

    def new_tenant_sql(self, schema):
        """One transaction: CREATE SCHEMA, CREATE TABLE and the rows."""
        return ("BEGIN;\n" + USERS_DDL.format(s=qident(schema))
                + f"INSERT INTO {qident(schema)}.users "
                + USERS_SELECT.format(domain=schema.replace("'", ""), lo=1, hi=self.p["rows"])
                + ";\nCOMMIT;\n")


@workload
class PgBench(Workload):
    name = "pgbench"
    description = ("pgbench -i per tenant schema, then a timed TPC-B-like run per schema "
                   "(all schemas at once; custom script with schema-qualified tables)")
    defaults = {"tenants": 3, "scale": 1, "duration": 30, "clients": 1, "rows": None}

    def setup(self, src):
        for s in self.schemas:
            src.psql(f"CREATE SCHEMA {qident(s)};")
            env = dict(os.environ)
            env["PGOPTIONS"] = "-c search_path=" + qident(s).replace(" ", "\\ ")
            subprocess.run(["pgbench", "-i", "-q", "-s", str(self.p["scale"]), src.dsn],
                           env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)

    def generate(self, src, work):
        procs = []
        for i, s in enumerate(self.schemas):
            q = qident(s)
            script = os.path.join(work, f"pgbench-{i}.sql")
            with open(script, "w") as f:
                f.write(f"""\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE {q}.pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM {q}.pgbench_accounts WHERE aid = :aid;
UPDATE {q}.pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE {q}.pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO {q}.pgbench_history (tid, bid, aid, delta, mtime)
  VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
""")
            cmd = ["pgbench", "-n", "-f", script, "-D", f"scale={self.p['scale']}",
                   "-c", str(self.p["clients"]), "-j", "1",
                   f"--random-seed={self.p['seed'] + i}"]
            if self.p["rows"]:  # 4 row changes per transaction
                per = max(1, math.ceil(self.p["rows"] / (4 * len(self.schemas)
                                                          * self.p["clients"])))
                cmd += ["-t", str(per)]
            else:
                cmd += ["-T", str(self.p["duration"])]
            procs.append(subprocess.Popen(cmd + [src.dsn], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        tps = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"pgbench failed: {err.decode(errors='replace')[-2000:]}")
            for line in out.decode().splitlines():
                if line.startswith("tps ="):
                    tps.append(float(line.split()[2]))
        return {"rows_expected": None, "pgbench_tps_per_schema": tps}
