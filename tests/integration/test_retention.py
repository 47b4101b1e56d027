"""Archive retention (archive.retention) against real PostgreSQL, on the file
archive and on s3rver, with two slot groups: batches the warehouse has not
applied stay however old, applied ones older than the retention go, the
newest batch of each stream always stays, a removal cut short by a crash is
finished by the next pass, and afterwards `zetl verify`, `zetl resync` and an
independent count in psql agree with the source."""

import os
import re
import shutil
import signal
import tempfile
import time
import unittest

import s3faults
from zetltest import SOURCE_DIR, Cluster, Zetl, config, main, run_zetl, slot_group

TENANTS = ["tenant_a", "tenant_b", "tenant_c", "tenant_d"]
GROUPS = 2
STREAMS = [f"zetl_{g}" for g in range(GROUPS)]
BUCKET = "zetl-retention"
BATCH_RE = re.compile(r"^[0-9A-F]{16}-[0-9A-F]{16}$")


class RetentionBase:
    """The scenario; subclasses say where the archive is and how to look into it."""

    @classmethod
    def setUpClass(cls):
        cls.pg = Cluster()

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-retention-")
        name = self.id().split(".")[-1].lower()[:30] + "_" + type(self).__name__.lower()[:8]
        self.db = self.pg.createdb(name)
        self.whdb = self.pg.createdb(name + "_wh")
        self.env = {}
        self.assertEqual({slot_group(t, GROUPS) for t in TENANTS}, set(range(GROUPS)))
        self.sql("".join(f"CREATE SCHEMA {t}; CREATE TABLE {t}.users "
                         f"(id int PRIMARY KEY, v text);" for t in TENANTS))
        self.next_id = 1

    def tearDown(self):
        Zetl.kill_all()
        self.pg.drop_slots(self.db)
        self.pg.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        self.pg.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def sql(self, text):
        return self.pg.psql(text, db=self.db)

    def wh(self, text):
        return self.pg.psql(text, db=self.whdb)

    def zetl(self, warehouse=True, retention=None):
        """A Zetl on the shared work dir (one archive, one buffer.dir) with this config."""
        extra = ""
        if warehouse:
            extra += (f"warehouse:\n  kind: postgres\n  dsn: \"{self.pg.dsn(self.whdb)}\"\n"
                      f"  schema: zetl_raw\n")
        text = config(self.pg, self.db, slot_groups=GROUPS, extra=extra)
        archive = self.archive_config()
        if retention:
            archive += "".join(f"  {k}: {v}\n" for k, v in retention.items())
        text = text.replace("archive:\n  url: file://./archive\n", archive)
        z = Zetl(self.work, text)
        # One config file per variant: Zetl writes zetl.yaml, which the next one would overwrite.
        self.nconfigs = getattr(self, "nconfigs", 0) + 1
        z.config = os.path.join(self.work, f"zetl-{self.nconfigs}.yaml")
        with open(z.config, "w") as f:
            f.write(text)
        return z

    def run_once(self, z):
        open(z.stderr_path, "w").close()
        self.assertEqual(z.run_once(env=self.env), 0, z.log())
        return z.log()

    def insert(self):
        """One transaction per tenant: every stream gets a batch in the next run."""
        for t in TENANTS:
            self.sql(f"INSERT INTO {t}.users SELECT g, 'v' || g FROM "
                     f"generate_series({self.next_id}, {self.next_id + 9}) g")
            self.next_id += 10

    def batches_by_stream(self):
        return {s: self.batches(s) for s in STREAMS}

    def assert_counts_agree(self):
        src = sum(int(self.sql(f"SELECT count(*) FROM {t}.users")[0][0]) for t in TENANTS)
        got = int(self.wh("SELECT count(*) FROM zetl_raw.users")[0][0])
        self.assertEqual(got, src)
        self.assertEqual(src, (self.next_id - 1))

    def verify(self, z):
        rc, out, err = run_zetl(["verify", "--config", z.config], cwd=self.work, env=self.env,
                                timeout=300)
        self.assertEqual(rc, 0, out + err)

    def test_keeps_what_a_replay_from_the_last_snapshot_needs(self):
        """Without retention_ignore_snapshot, batches from the start of the last snapshot on
        stay even when applied and old; a fresh snapshot of every table lets the older go."""
        self.insert()  # existing rows: the first run copies them (initial snapshot)
        z = self.zetl(retention={"retention": "1s"})
        self.run_once(z)
        for _ in range(2):
            self.insert()
            self.run_once(z)
        before = self.batches_by_stream()
        time.sleep(1.5)
        self.run_once(z)
        self.assertEqual(self.batches_by_stream(), before)
        # A re-snapshot of everything: a replay now starts from it.
        rc, out, err = run_zetl(["snapshot", "--config", z.config], cwd=self.work, env=self.env,
                                timeout=300)
        self.assertEqual(rc, 0, out + err)
        time.sleep(1.5)
        self.insert()
        self.run_once(z)
        after = self.batches_by_stream()
        for s in STREAMS:
            self.assertFalse(set(before[s]) & set(after[s]), (s, before[s], after[s]))
        self.verify(z)
        self.assert_counts_agree()

    def test_removes_only_applied_batches(self):
        applied_cfg = self.zetl()
        archive_only = self.zetl(warehouse=False)
        retention = {"retention": "1s", "retention_ignore_snapshot": "true"}

        self.run_once(applied_cfg)  # slots and publications (no snapshot: rows come after)
        # Applied: three batches per stream that the warehouse has.
        for _ in range(3):
            self.insert()
            self.run_once(applied_cfg)
        applied = self.batches_by_stream()
        for s in STREAMS:
            self.assertGreaterEqual(len(applied[s]), 3, applied)

        # Archived only: three more per stream that the warehouse has not seen.
        for _ in range(3):
            self.insert()
            self.run_once(archive_only)
        both = self.batches_by_stream()
        unapplied = {s: [b for b in both[s] if b not in applied[s]] for s in STREAMS}
        for s in STREAMS:
            self.assertGreaterEqual(len(unapplied[s]), 3, both)
        time.sleep(2)  # every batch is older than the retention now

        # A long retention removes nothing (archive only: every batch counts as applied).
        self.run_once(self.zetl(warehouse=False, retention={"retention": "1h"}))
        self.assertEqual(self.batches_by_stream(), both)

        # The pass at start runs before the warehouse catches up: the applied batches
        # go, the unapplied ones stay, however old.
        z = self.zetl(retention=retention)
        log = self.run_once(z)
        self.assertEqual(self.batches_by_stream(), unapplied, log)
        for s in STREAMS:
            self.assertRegex(log, rf"stream {s}: retention removed {len(applied[s])} batch\(es\), "
                                  rf"[1-9][0-9]* bytes; oldest remaining batch {unapplied[s][0]}")
        self.assert_counts_agree()  # the catch-up applied them afterwards

        # A crash cut the removal of the oldest batch of stream 0 short.
        self.interrupt_removal(STREAMS[0], unapplied[STREAMS[0]][0])
        time.sleep(1.1)

        # Now applied: all but the newest go; the half-removed one is finished.
        log = self.run_once(z)
        newest = {s: unapplied[s][-1:] for s in STREAMS}
        self.assertEqual(self.batches_by_stream(), newest, log)
        self.assertIn(f"stream {STREAMS[0]}: retention finished 1 batch removal(s)", log)
        self.assertEqual(self.leftovers(STREAMS[0]), [])
        u0, u1 = len(unapplied[STREAMS[0]]), len(unapplied[STREAMS[1]])
        self.assertIn(f"stream {STREAMS[0]}: retention removed {u0 - 2} batch(es)", log)
        self.assertIn(f"stream {STREAMS[1]}: retention removed {u1 - 1} batch(es)", log)
        self.verify(z)
        self.assert_counts_agree()

        # The stream's position comes from the newest batch: a restart resends nothing
        # and loses nothing.
        self.insert()
        self.run_once(z)
        self.assert_counts_agree()
        rc, out, err = run_zetl(["resync", "--config", z.config, "users"], cwd=self.work,
                                env=self.env, timeout=300)
        self.assertEqual(rc, 0, out + err)
        self.verify(z)
        self.assert_counts_agree()

    def test_daemon_prunes_between_batches(self):
        z = self.zetl(retention={"retention": "1s", "retention_interval_ms": 200,
                                 "retention_ignore_snapshot": "true"})
        self.run_once(z)  # slots and publications (no snapshot: rows come after)
        self.insert()
        self.run_once(z)  # a first batch per stream
        open(z.stderr_path, "w").close()
        z.start(env=dict(self.env, ZETL_LOG_LEVEL="debug"))
        for _ in range(3):
            self.insert()
            time.sleep(1.5)
        # Every row applied first: a batch sealed after the check would be a second one.
        deadline = time.time() + 60
        while time.time() < deadline and \
                self.wh("SELECT count(*) FROM zetl_raw.users") != [[str(self.next_id - 1)]]:
            time.sleep(0.2)
        # Passes every 200 ms while idle: the stream keeps only its newest batch.
        deadline = time.time() + 60
        while time.time() < deadline:
            got = self.batches_by_stream()
            if all(len(got[s]) == 1 for s in STREAMS):
                break
            time.sleep(0.3)
        self.assertTrue(all(len(got[s]) == 1 for s in STREAMS), (got, z.log()))
        z.proc.send_signal(signal.SIGTERM)
        self.assertEqual(z.wait(), 0, z.log())
        with open(z.stderr_path, errors="replace") as f:
            log = f.read()  # all of it: z.log() keeps the tail only
        self.assertIn("retention removed 0 batch(es)", log)
        self.assertRegex(log, r"DEBUG:  archive: stream zetl_\d: removed batch [0-9A-F]{16}-")
        for s in STREAMS:
            self.assertEqual(len(self.batches(s)), 1)
        self.verify(z)
        self.assert_counts_agree()


class FileRetentionTest(RetentionBase, unittest.TestCase):
    def archive_config(self):
        return "archive:\n  url: file://./archive\n"

    def batches(self, stream):
        d = os.path.join(self.work, "archive", stream)
        if not os.path.isdir(d):
            return []
        names = sorted(n for n in os.listdir(d) if BATCH_RE.match(n))
        for n in names:  # every batch left is whole
            self.assertTrue(os.path.exists(os.path.join(d, n, "manifest.json")), n)
        return names

    def interrupt_removal(self, stream, name):
        d = os.path.join(self.work, "archive", stream)
        os.rename(os.path.join(d, name), os.path.join(d, ".del-" + name))

    def leftovers(self, stream):
        d = os.path.join(self.work, "archive", stream)
        return [n for n in os.listdir(d) if not BATCH_RE.match(n)]


class S3RetentionTest(RetentionBase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.s3 = s3faults.S3rver(SOURCE_DIR, BUCKET)

    @classmethod
    def tearDownClass(cls):
        cls.s3.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.prefix = f"runs/{self.db}"
        # Every request zetl makes (DELETE included) goes through SigV4 checking.
        self.proxy = s3faults.FaultProxy(f"127.0.0.1:{self.s3.port}")
        self.client = s3faults.S3Client(self.s3.endpoint, BUCKET)
        self.env = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
                    "ZETL_S3_TIMEOUT_MS": "5000"}

    def tearDown(self):
        self.proxy.stop()
        super().tearDown()
        self.assertEqual(self.proxy.sig_failures, [])

    def archive_config(self):
        return (f"archive:\n  url: s3://{BUCKET}/{self.prefix}\n  s3:\n"
                f"    endpoint: {self.proxy.endpoint}\n    region: us-east-1\n")

    def objects(self, stream):
        """{batch name: [file names]} under the stream."""
        base = f"{self.prefix}/{stream}/"
        out = {}
        for key in self.client.list(base):
            name, _, file = key[len(base):].partition("/")
            out.setdefault(name, []).append(file)
        return out

    def batches(self, stream):
        return sorted(n for n, files in self.objects(stream).items()
                      if BATCH_RE.match(n) and "manifest.json" in files)

    def interrupt_removal(self, stream, name):
        self.client.delete(f"{self.prefix}/{stream}/{name}/manifest.json")
        self.assertIn(name, self.objects(stream))  # its data files are still there

    def leftovers(self, stream):
        return [n for n, files in self.objects(stream).items() if "manifest.json" not in files]

    def test_failed_delete_leaves_no_half_batch(self):
        """S3 has no rename: manifest.json goes first, so a removal that fails midway
        leaves a prefix that is no longer a batch, and the next pass finishes it."""
        z = self.zetl(retention={"retention": "1s", "retention_ignore_snapshot": "true"})
        self.run_once(z)  # slots and publications
        for _ in range(2):
            self.insert()
            self.run_once(z)
        before = self.batches_by_stream()
        for s in STREAMS:
            self.assertGreaterEqual(len(before[s]), 2, before)
        time.sleep(1.1)

        # Every DELETE of a data file is refused.
        rule = s3faults.Rule("DELETE", r"\.csv\.zst$", ("status", 403), times=None)
        with self.proxy.lock:
            self.proxy.rules.append(rule)
        log = self.run_once(z)
        self.assertGreater(rule.hits, 0)
        for s in STREAMS:
            self.assertRegex(log, rf"WARNING:  stream {s}: archive retention: .*403 AccessDenied")
            self.assertEqual(self.batches(s), before[s][1:], log)
            self.assertEqual(self.leftovers(s), before[s][:1])
        with self.proxy.lock:
            self.proxy.rules.remove(rule)

        log = self.run_once(z)
        for s in STREAMS:
            self.assertIn(f"stream {s}: retention finished 1 batch removal(s)", log)
            self.assertEqual(self.batches(s), before[s][-1:], log)
            self.assertEqual(self.leftovers(s), [])
        self.verify(z)
        self.assert_counts_agree()


if __name__ == "__main__":
    main()
