"""zetl replay and zetl tenant purge: several tenants over two slot groups
feeding shared warehouse tables, a file archive (and one run on s3rver),
replayed into fresh schemas and compared with the source row by row here,
with psql, not only with zetl verify."""

import datetime
import os
import shutil
import time

import s3faults
from zetltest import (SOURCE_DIR, SourceAndWarehouse, Zetl, config, main, read_archive, run_zetl,
                      slot_group)

TENANTS = ["tenant_a", "tenant_b", "tenant_c", "tenant_d"]
TABLES = {
    "users": ("id int PRIMARY KEY, email text, score numeric(10,2), bio text", "id"),
    "orders": ("id bigint PRIMARY KEY, user_id int, note text", "id"),
}


class ReplayBase(SourceAndWarehouse):
    archive_url = None  # file archive unless a subclass sets one
    env = None

    WORK_PREFIX = "zetl-replay-"

    def setUp(self):
        super().setUp()

    def tearDown(self):
        Zetl.kill_all()
        self.src.drop_slots(self.db)
        self.src.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        self.whc.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def zetl(self):
        text = config(self.src, self.db, slot_groups=2, extra=f"""warehouse:
  kind: postgres
  dsn: "{self.whc.dsn(self.whdb)}"
  schema: zetl_raw
""")
        if self.archive_url:
            text = text.replace("  url: file://./archive\n", self.archive_url)
        return Zetl(self.work, text)

    def sql(self, text):
        return self.src.psql(text, db=self.db)

    def wh(self, text):
        return self.whc.psql(text, db=self.whdb)

    def run_once(self, z):
        self.assertEqual(z.run_once(env=self.env), 0, z.log())

    def replay(self, z, *args):
        return run_zetl(["replay", "--config", z.config, *args], cwd=self.work, env=self.env,
                        timeout=300)

    def replay_ok(self, z, *args):
        rc, out, err = self.replay(z, *args)
        self.assertEqual(rc, 0, out + err)
        return err

    def source_rows(self, tenant, table):
        cols = self.columns(table)
        return self.sql(f"SELECT {cols} FROM {tenant}.{table} ORDER BY 1")

    def columns(self, table):
        names = [c.split()[0] for c in TABLES[table][0].split(", ")]
        return ", ".join(f"{c}::text" for c in names)

    def wh_rows(self, schema, tenant, table):
        if not self.wh(f"SELECT to_regclass('{schema}.{table}')")[0][0]:
            return []
        return self.wh(f"SELECT {self.columns(table)} FROM {schema}.{table} "
                       f"WHERE tenant_id = '{tenant}' ORDER BY 1")

    def snapshot(self, tenants=TENANTS):
        return {(t, tb): self.source_rows(t, tb) for t in tenants for tb in TABLES}

    def assert_schema_equals(self, schema, expected, tenants=TENANTS):
        """The warehouse schema holds exactly `expected` (tenant, table) -> rows."""
        for tb in TABLES:
            for t in tenants:
                self.assertEqual(self.wh_rows(schema, t, tb), expected[(t, tb)],
                                 f"{schema}.{tb} of {t}")
            if self.wh(f"SELECT to_regclass('{schema}.{tb}')")[0][0]:
                others = self.wh(f"SELECT DISTINCT tenant_id FROM {schema}.{tb} WHERE tenant_id "
                                 f"<> ALL (ARRAY[{', '.join(repr(t) for t in tenants)}])")
                self.assertEqual(others, [], f"rows of other tenants in {schema}.{tb}")
                dup = self.wh(f"SELECT count(*) FROM (SELECT tenant_id, id FROM {schema}.{tb} "
                              f"GROUP BY 1, 2 HAVING count(*) > 1) d")
                self.assertEqual(dup, [["0"]], f"duplicate keys in {schema}.{tb}")

    def build_archive(self):
        """Three rounds of changes, each archived and applied by `zetl run --once`.
        Returns (z, lsn_mid, time_mid, state_mid): a position between rounds 1
        and 2 and the source as it was there."""
        self.assertEqual(len({slot_group(t, 2) for t in TENANTS}), 2)
        self.sql("".join(f"CREATE SCHEMA {t};" + "".join(
            f"CREATE TABLE {t}.{name} ({cols});" for name, (cols, _) in TABLES.items())
            for t in TENANTS))
        z = self.zetl()
        self.run_once(z)  # slots and publications
        # Round 1: inserts, in several transactions.
        for k, t in enumerate(TENANTS):
            self.sql(f"INSERT INTO {t}.users SELECT g, 'u' || g || '@{t}', g / 3.0, "
                     f"CASE WHEN g % 5 = 0 THEN NULL ELSE repeat('b', g) END "
                     f"FROM generate_series(1, {40 + k * 10}) g;"
                     f"INSERT INTO {t}.orders SELECT g, g % 7, 'n,\"' || g "
                     f"FROM generate_series(1, 25) g;")
        self.run_once(z)
        state_mid = self.snapshot()
        lsn_mid = self.sql("SELECT pg_current_wal_lsn()")[0][0]
        time.sleep(1.1)
        time_mid = self.sql("SELECT to_char(now() AT TIME ZONE 'UTC', "
                            "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")[0][0]
        time.sleep(1.1)
        # Round 2: updates, deletes, a key change, a truncate of one tenant.
        self.sql("".join(
            f"UPDATE {t}.users SET score = score + 1, email = NULL WHERE id % 3 = 0;"
            f"DELETE FROM {t}.users WHERE id % 4 = 0;"
            f"UPDATE {t}.users SET id = id + 1000 WHERE id = 1;"
            f"UPDATE {t}.orders SET note = '' WHERE id < 5;" for t in TENANTS))
        self.sql("TRUNCATE tenant_c.orders; INSERT INTO tenant_c.orders VALUES (99, 1, 'after');")
        self.run_once(z)
        # Round 3: more inserts, and a TOAST-sized value left unchanged by an update.
        self.sql("".join(
            f"INSERT INTO {t}.users SELECT g, 'late', 1, NULL FROM generate_series(500, 520) g;"
            f"UPDATE {t}.users SET bio = repeat(md5(id::text), 400) WHERE id = 2;"
            f"UPDATE {t}.users SET score = 7 WHERE id = 2;" for t in TENANTS))
        self.run_once(z)
        return z, lsn_mid, time_mid, state_mid


class ReplayFileArchiveTest(ReplayBase):
    def test_whole_archive_into_fresh_schema_and_exactly_once(self):
        z, _, _, _ = self.build_archive()
        final = self.snapshot()
        self.assert_schema_equals("zetl_raw", final)
        batches = sum(len(os.listdir(os.path.join(self.work, "archive", s)))
                      for s in os.listdir(os.path.join(self.work, "archive")))
        self.assertGreaterEqual(batches, 4)
        err = self.replay_ok(z, "--into", "rebuilt")
        self.assert_schema_equals("rebuilt", final)
        self.assertIn(f"{batches} batch(es), 0 of them applied already", err)
        # Its own bookkeeping: both streams, at the same offsets as the live schema.
        offsets = "SELECT stream, last_lsn FROM {}._zetl_offsets ORDER BY 1"
        self.assertEqual(self.wh(offsets.format("rebuilt")), self.wh(offsets.format("zetl_raw")))
        self.assertEqual([r[0] for r in self.wh(offsets.format("rebuilt"))], ["zetl_0", "zetl_1"])
        # Exactly once: a second replay into it, and one into the live schema, change nothing.
        stamp = ("SELECT count(*), max(_zetl_synced_at)::text FROM {}.users")
        before = (self.wh(stamp.format("rebuilt")), self.wh(stamp.format("zetl_raw")))
        err = self.replay_ok(z, "--into", "rebuilt")
        self.assertIn(f"{batches} batch(es), {batches} of them applied already", err)
        err = self.replay_ok(z)
        self.assertIn(f"{batches} of them applied already", err)
        self.assertEqual((self.wh(stamp.format("rebuilt")), self.wh(stamp.format("zetl_raw"))),
                         before)
        self.assert_schema_equals("rebuilt", final)
        # zetl verify agrees about the live schema.
        rc, out, err = run_zetl(["verify", "--config", z.config], cwd=self.work)
        self.assertEqual(rc, 0, out + err)

    def test_tenant_and_table_filters_record_nothing(self):
        z, _, _, _ = self.build_archive()
        final = self.snapshot()
        # A filter into the live schema is refused, naming what is needed.
        rc, out, err = self.replay(z, "--tenant", "tenant_a")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("--into", err)
        rc, out, err = self.replay(z, "--table", "users", "--into", "zetl_raw")
        self.assertEqual(rc, 2, out + err)
        # One tenant of one table.
        self.replay_ok(z, "--tenant", "tenant_a", "--tenant", "tenant_d", "--table", "users",
                       "--into", "part")
        for t in TENANTS:
            want = final[(t, "users")] if t in ("tenant_a", "tenant_d") else []
            self.assertEqual(self.wh_rows("part", t, "users"), want, t)
            self.assertEqual(self.wh_rows("part", t, "orders"), [], t)
        self.assertEqual(self.wh("SELECT count(*) FROM part._zetl_offsets"), [["0"]])
        self.assertEqual(self.wh("SELECT count(*) FROM part._zetl_table_state"), [["0"]])
        # Tables only: every tenant of orders (the truncated tenant_c included).
        self.replay_ok(z, "--table", "orders", "--into", "part")
        for t in TENANTS:
            self.assertEqual(self.wh_rows("part", t, "orders"), final[(t, "orders")], t)
        self.assertEqual(self.wh("SELECT count(*) FROM part._zetl_offsets"), [["0"]])
        # Nothing recorded, so an unfiltered replay fills in every other row.
        self.replay_ok(z, "--into", "part")
        self.assert_schema_equals("part", final)

    def test_lsn_and_time_ranges(self):
        z, lsn_mid, time_mid, state_mid = self.build_archive()
        final = self.snapshot()
        # Up to an LSN: the source as it was there, and the offsets there.
        self.replay_ok(z, "--to", lsn_mid, "--into", "upto")
        self.assert_schema_equals("upto", state_mid)
        mid = self.wh(f"SELECT '{lsn_mid}'::pg_lsn - '0/0'::pg_lsn")[0][0]
        for stream, last in self.wh("SELECT stream, last_lsn FROM upto._zetl_offsets"):
            self.assertLessEqual(int(last), int(mid), stream)
        # ...and carrying on from there gives the rest, exactly once.
        self.replay_ok(z, "--into", "upto")
        self.assert_schema_equals("upto", final)
        # Up to a time: the same point.
        self.replay_ok(z, "--to", time_mid, "--into", "upto_t")
        self.assert_schema_equals("upto_t", state_mid)
        # From an LSN: only what changed after it (round 1's untouched rows stay out).
        self.replay_ok(z, "--from", lsn_mid, "--into", "since")
        ids = [int(r[0]) for r in self.wh("SELECT id FROM since.users WHERE tenant_id = "
                                          "'tenant_a' ORDER BY 1")]
        self.assertIn(500, ids)
        self.assertIn(1001, ids)
        self.assertIn(3, ids)     # updated in round 2
        self.assertNotIn(7, ids)  # inserted in round 1, never touched again
        self.assertEqual(self.wh("SELECT count(*) FROM since._zetl_offsets"), [["0"]])
        # A time range that covers nothing new.
        self.replay_ok(z, "--from", time_mid, "--to", time_mid, "--into", "empty")

    def test_to_inside_a_batch(self):
        """--to an LSN (or a time) between two transactions of one batch: the batch is
        cut there, checked against the archive read independently (zstd + CSV)."""
        z, lsn_mid, _, _ = self.build_archive()
        mid = int(self.wh(f"SELECT '{lsn_mid}'::pg_lsn - '0/0'::pg_lsn")[0][0])
        _, rows = read_archive(os.path.join(self.work, "archive"))
        round1 = [r for r in rows if int(r["_zetl_lsn"]) <= mid]
        self.assertTrue(all(r["_zetl_op"] == "I" for r in round1))
        # A commit LSN with transactions of the same batch after it.
        by_batch = {}
        for r in round1:
            by_batch.setdefault((r["_stream"], r["_batch"]), set()).add(int(r["_zetl_lsn"]))
        lsns = max(by_batch.values(), key=len)
        self.assertGreaterEqual(len(lsns), 3)
        cut = sorted(lsns)[len(lsns) // 2]
        cut_ts = next(r["_zetl_commit_ts"] for r in round1 if int(r["_zetl_lsn"]) == cut)
        text = f"{cut >> 32:X}/{cut & 0xFFFFFFFF:X}"
        want = {tb: sorted((r["tenant_id"], int(r["id"])) for r in round1
                           if r["_table"] == tb and int(r["_zetl_lsn"]) <= cut) for tb in TABLES}
        self.assertTrue(0 < len(want["users"]) + len(want["orders"]) < len(round1))
        for schema, bound in (("cut_lsn", text), ("cut_time", cut_ts)):
            self.replay_ok(z, "--to", bound, "--into", schema)
            for tb in TABLES:
                got = self.wh(f"SELECT tenant_id, id FROM {schema}.{tb} ORDER BY 1, 2") \
                    if self.wh(f"SELECT to_regclass('{schema}.{tb}')")[0][0] else []
                self.assertEqual(sorted((t, int(i)) for t, i in got), want[tb], (schema, tb))
            offs = self.wh(f"SELECT max(last_lsn) FROM {schema}._zetl_offsets")[0][0]
            self.assertEqual(int(offs), cut, schema)

    def test_range_not_in_archive(self):
        z, lsn_mid, _, _ = self.build_archive()
        first = min(n for s in os.listdir(os.path.join(self.work, "archive"))
                    for n in os.listdir(os.path.join(self.work, "archive", s)))
        rc, out, err = self.replay(z, "--from", "0/10", "--into", "x")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("--from 0/10 is before the oldest archived transaction", err)
        self.assertIn(first, err)
        rc, out, err = self.replay(z, "--to", "FFFF/0", "--into", "x")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("--to FFFF/0 is after the newest archived transaction", err)
        self.assertIn("not archived yet", err)
        rc, out, err = self.replay(z, "--to", "2000-01-01", "--into", "x")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("is before the oldest archived transaction", err)
        future = (datetime.datetime.utcnow() + datetime.timedelta(days=1)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        rc, out, err = self.replay(z, "--to", future, "--into", "x")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("is after the newest archived transaction", err)
        # Nothing was applied by the refused replays.
        self.assertEqual(self.wh("SELECT to_regclass('x.users')"), [[None]])
        # Bad usage names the argument.
        for args, bad in ((["--from", "yesterday"], "yesterday"), (["--to", "1/2/3"], "1/2/3"),
                          (["--from", lsn_mid, "--to", "0/1", "--into", "x"], "is after --to"),
                          (["--into", "x" * 64], "x" * 64), (["--tenant", ""], "--tenant")):
            rc, out, err = self.replay(z, *args)
            self.assertEqual(rc, 2, (args, out + err))
            self.assertIn(bad, err)

    def test_tenant_purge(self):
        z, _, _, _ = self.build_archive()
        final = self.snapshot()
        counts = {tb: int(self.wh(f"SELECT count(*) FROM zetl_raw.{tb} WHERE tenant_id = "
                                  f"'tenant_b'")[0][0]) for tb in TABLES}
        self.assertTrue(all(counts.values()))
        rc, out, err = run_zetl(["tenant", "purge", "--config", z.config, "tenant_b"],
                                cwd=self.work)
        self.assertEqual(rc, 0, out + err)
        for tb, n in counts.items():
            self.assertIn(f"zetl_raw.{tb}: {n} row(s) removed", out)
        others = [t for t in TENANTS if t != "tenant_b"]
        for tb in TABLES:
            self.assertEqual(self.wh_rows("zetl_raw", "tenant_b", tb), [])
        self.assert_schema_equals("zetl_raw", final, tenants=others)
        # Again: nothing left, said so, exit 0.
        rc, out, err = run_zetl(["tenant", "purge", "--config", z.config, "tenant_b"],
                                cwd=self.work)
        self.assertEqual(rc, 0, out + err)
        self.assertIn('tenant "tenant_b" has no rows', out)
        # The next run and a replay into the live schema do not bring them back.
        self.run_once(z)
        self.replay_ok(z)
        for tb in TABLES:
            self.assertEqual(self.wh_rows("zetl_raw", "tenant_b", tb), [])
        self.assert_schema_equals("zetl_raw", final, tenants=others)
        # A replay on purpose, into another schema, has them.
        self.replay_ok(z, "--tenant", "tenant_b", "--into", "restored")
        self.assert_schema_equals("restored", final, tenants=["tenant_b"])
        # Usage.
        rc, out, err = run_zetl(["tenant", "purge", "--config", z.config], cwd=self.work)
        self.assertEqual(rc, 2, out + err)
        rc, out, err = run_zetl(["tenant", "wipe", "--config", z.config, "x"], cwd=self.work)
        self.assertEqual(rc, 2, out + err)


class ReplayS3ArchiveTest(ReplayBase):
    BUCKET = "zetl-replay"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.s3 = s3faults.S3rver(SOURCE_DIR, cls.BUCKET)
        cls.env = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}
        cls.archive_url = (f"  url: s3://{cls.BUCKET}/replay\n  s3:\n"
                           f"    endpoint: {cls.s3.endpoint}\n    region: us-east-1\n")

    @classmethod
    def tearDownClass(cls):
        cls.s3.stop()
        super().tearDownClass()

    def test_replay_from_s3_into_fresh_schema(self):
        z, lsn_mid, time_mid, state_mid = self.build_archive()
        final = self.snapshot()
        err = self.replay_ok(z, "--into", "rebuilt")
        self.assert_schema_equals("rebuilt", final)
        self.assertIn("0 of them applied already", err)
        self.replay_ok(z, "--to", time_mid, "--into", "upto")
        self.assert_schema_equals("upto", state_mid)
        rc, out, err = self.replay(z, "--from", "0/10", "--into", "x")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("before the oldest archived transaction", err)
        fetch = os.path.join(self.work, "zetl-data", "s3-fetch")
        self.assertEqual(os.listdir(fetch) if os.path.isdir(fetch) else [], [])


if __name__ == "__main__":
    main()
