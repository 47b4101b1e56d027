"""Slots: a dropped slot is a clear stop (never silently recreated over a gap),
tenants never move between slot groups behind the user's back, unused zetl slots
are reported and dropped on request, a busy slot is retried, and a silent
replication connection is dropped and reconnected."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from zetltest import PG_BIN, Cluster, Zetl, config, main, read_archive, run_zetl, slot_group



def tenant_ddl(schema):
    return f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".users (id int PRIMARY KEY, name text);\n'


def full_log(z):
    with open(z.stderr_path, errors="replace") as f:
        return f.read()


def wait_for(pred, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class SlotsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Cluster()

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        self.db = self.pg.createdb(self.id().split(".")[-1].lower())
        self.holders = []

    def tearDown(self):
        for p in self.holders:
            if p.poll() is None:
                p.kill()
                p.wait()
        Zetl.kill_all()
        self.pg.drop_slots(self.db)
        self.pg.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def sql(self, text):
        return self.pg.psql(text, db=self.db)

    def zetl(self, **kw):
        return Zetl(self.work, config(self.pg, self.db, **kw))

    def slots(self):
        return sorted(r[0] for r in self.pg.psql(
            f"SELECT slot_name FROM pg_replication_slots WHERE database = '{self.db}'"))

    def publications(self):
        return sorted(r[0] for r in self.sql("SELECT pubname FROM pg_publication"))

    def published(self):
        return sorted((r[0], r[1]) for r in self.sql(
            "SELECT DISTINCT pubname, schemaname FROM pg_publication_tables"))

    def archived_ids(self):
        """Rows of the complete batches; None while a batch is being written (a .tmp- entry)."""
        try:
            _, rows = read_archive(os.path.join(self.work, "archive"))
        except AssertionError as e:
            if "leftover temporary entry" not in str(e):
                raise
            return None
        return [(r["tenant_id"], r["id"]) for r in rows]

    def walsender_pid(self, slot="zetl_0"):
        rows = self.pg.psql(f"SELECT active_pid FROM pg_replication_slots "
                            f"WHERE slot_name = '{slot}' AND active")
        return int(rows[0][0]) if rows else None

    # ---- lost slots ----

    def test_first_start_creates_slot(self):
        self.sql(tenant_ddl("tenant_a"))
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertEqual(self.slots(), ["zetl_0"])
        self.assertNotIn("does not exist", z.log())

    def test_dropped_slot_after_consuming_is_a_clear_stop(self):
        self.sql(tenant_ddl("tenant_a"))
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        self.sql("INSERT INTO tenant_a.users VALUES (1, 'a')")
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertEqual(self.archived_ids(), [("tenant_a", "1")])
        _, rows = read_archive(os.path.join(self.work, "archive"))
        last = int(rows[-1]["_zetl_lsn"])
        self.sql("SELECT pg_drop_replication_slot('zetl_0')")
        self.sql("INSERT INTO tenant_a.users VALUES (2, 'lost')")

        z2 = self.zetl()
        self.assertEqual(z2.run_once(), 1, z2.log())
        log = z2.log()
        self.assertIn('replication slot "zetl_0" does not exist, but zetl has consumed from it',
                      log)
        self.assertIn(f"{last >> 32:X}/{last & 0xFFFFFFFF:X}", log)
        self.assertIn("docs/operations.md", log)
        self.assertIn('"tenant_a"', log)
        self.assertEqual(self.slots(), [], "no slot may be created over the gap")

        # The documented recovery: set the stream's archive aside, start again.
        os.rename(os.path.join(self.work, "archive", "zetl_0"),
                  os.path.join(self.work, "archive-zetl_0-lost"))
        z3 = self.zetl()
        self.assertEqual(z3.run_once(), 0, z3.log())
        self.assertEqual(self.slots(), ["zetl_0"])

    def test_slot_dropped_while_streaming_is_fatal(self):
        self.sql(tenant_ddl("tenant_a"))
        z = self.zetl()
        z.start()
        wait_for(lambda: "replication started" in z.log(), what="replication start")
        self.sql("INSERT INTO tenant_a.users VALUES (1, 'a')")
        wait_for(lambda: os.path.isdir(os.path.join(self.work, "archive", "zetl_0")) and
                 self.archived_ids() == [("tenant_a", "1")], what="archived row")
        # Terminate the walsender and drop the slot before zetl reconnects (1 s backoff).
        deadline = time.time() + 20
        while True:
            self.pg.psql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                         "WHERE slot_name = 'zetl_0' AND active")
            r = self.pg.psql("SELECT pg_drop_replication_slot('zetl_0')", check=False)
            if not self.pg.psql("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'zetl_0'"):
                break
            self.assertLess(time.time(), deadline, "could not drop the slot")
            time.sleep(0.05)
        self.assertEqual(z.wait(60), 1, z.log())
        log = z.log()
        self.assertIn('replication slot "zetl_0" was dropped while zetl streamed from it', log)
        self.assertIn("docs/operations.md", log)
        self.assertEqual(self.slots(), [])

    # ---- slot groups ----

    def schemas_for(self, groups, want_moved):
        """Schemas spread over both groups of `groups` = 2 (some in group 1)."""
        names = [f"tenant_{c}" for c in "abcdefgh"]
        moved = [s for s in names if slot_group(s, groups) != 0]
        self.assertTrue(moved and len(moved) < len(names))
        return names, moved

    def test_slot_groups_change_is_refused(self):
        names, moved = self.schemas_for(2, True)
        self.sql("".join(tenant_ddl(s) for s in names))
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        before = (self.slots(), self.publications(), self.published())
        self.assertEqual(before[0], ["zetl_0"])

        z2 = self.zetl(slot_groups=2)
        self.assertEqual(z2.run_once(), 1, z2.log())
        log = z2.log()
        self.assertIn(f'tenant schema "{moved[0]}" is streamed through slot group 0 '
                      f'(publication "zetl_0")', log)
        self.assertIn('assigns it to slot group 1 ("zetl_1")', log)
        self.assertIn("docs/operations.md", log)
        self.assertEqual((self.slots(), self.publications(), self.published()), before,
                         "nothing may change on the source")

        # A new tenant schema and a restart with the old setting are fine.
        self.sql(tenant_ddl("tenant_new"))
        z3 = self.zetl()
        self.assertEqual(z3.run_once(), 0, z3.log())

        # The documented way: drain with the old config, then regroup.
        z2 = self.zetl(slot_groups=2)
        rc, out, err = run_zetl(["slots", "regroup", "--config", z2.config], cwd=self.work)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(self.slots(), ["zetl_0", "zetl_1"])
        self.assertEqual(z2.run_once(), 0, z2.log())
        self.sql(f"INSERT INTO {moved[0]}.users VALUES (7, 'moved')")
        self.assertEqual(z2.run_once(), 0, z2.log())
        self.assertIn((moved[0], "7"), self.archived_ids())

    def test_unused_slot_reported_and_dropped(self):
        a = next(s for s in (f"tenant_{c}" for c in "abcdefgh") if slot_group(s, 2) == 0)
        b = next(s for s in (f"tenant_{c}" for c in "abcdefgh") if slot_group(s, 2) == 1)
        self.sql(tenant_ddl(a) + tenant_ddl(b))
        z = self.zetl(schemas=(a, b), slot_groups=2)
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertEqual(self.slots(), ["zetl_0", "zetl_1"])

        # Tenant b retired: zetl_1 is no longer used, nothing moves.
        z2 = self.zetl(schemas=(a,), slot_groups=1)
        rc, out, err = run_zetl(["check", "--config", z2.config], cwd=self.work)
        self.assertIn('replication slot "zetl_1" (and its publication) is not used by the '
                      'configuration (source.slot_groups is 1) and retains', out)
        self.assertIn("of WAL; drop it with zetl slots drop-unused", out)
        self.assertEqual(z2.run_once(), 0, z2.log())
        self.assertIn('WARNING:  replication slot "zetl_1"', z2.log())
        self.assertEqual(self.slots(), ["zetl_0", "zetl_1"])

        rc, out, err = run_zetl(["slots", "drop-unused", "--config", z2.config], cwd=self.work)
        self.assertEqual(rc, 0, out + err)
        self.assertIn('dropped replication slot "zetl_1"', out)
        self.assertEqual(self.slots(), ["zetl_0"])
        self.assertEqual(self.publications(), ["zetl_0"])
        rc, out, err = run_zetl(["slots", "drop-unused", "--config", z2.config], cwd=self.work)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("no unused zetl replication slot", out)
        rc, out, err = run_zetl(["slots", "bogus", "--config", z2.config], cwd=self.work)
        self.assertEqual(rc, 2, out + err)

    # ---- fragile connections ----

    def test_busy_slot_is_retried(self):
        self.sql(tenant_ddl("tenant_a"))
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        env = dict(os.environ)
        holder = subprocess.Popen(
            (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) +
            [f"{PG_BIN}/pg_recvlogical", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U",
             "postgres", "-d", self.db, "--slot", "zetl_0", "--start", "--no-loop", "-f",
             "/dev/null", "-o", "proto_version=1", "-o", "publication_names=zetl_0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.holders.append(holder)
        wait_for(self.walsender_pid, what="pg_recvlogical holding the slot")
        z.start()
        wait_for(lambda: "is active for PID" in z.log(), what="busy-slot warning")
        self.assertIsNone(z.proc.poll(), z.log())
        self.assertIn('WARNING:  stream zetl_0: could not start replication: replication slot '
                      '"zetl_0" is active for PID', z.log())
        holder.terminate()
        holder.wait(30)
        wait_for(lambda: "replication started" in z.log(), timeout=90, what="replication start")
        self.sql("INSERT INTO tenant_a.users VALUES (1, 'after')")
        wait_for(lambda: os.path.isdir(os.path.join(self.work, "archive", "zetl_0")) and
                 ("tenant_a", "1") in (self.archived_ids() or []), what="archived row")
        self.assertEqual(z.kill(signal.SIGTERM), 0, z.log())

    def test_receive_timeout_reconnects(self):
        self.sql(tenant_ddl("tenant_a"))
        z = self.zetl(extra="", buffer_extra="")
        # A short timeout in the source section.
        with open(z.config) as f:
            text = f.read()
        with open(z.config, "w") as f:
            f.write(text.replace("  slot_groups: 1\n", "  slot_groups: 1\n  receive_timeout_ms: 2000\n"))
        z.start()
        wait_for(lambda: "replication started" in z.log(), what="replication start")
        # Idle with a live walsender: the half-way ping gets a keepalive, no timeout.
        time.sleep(5)
        self.assertNotIn("receive timeout", z.log())
        pid = wait_for(self.walsender_pid, what="walsender")
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: "receive timeout" in z.log(), timeout=30, what="receive timeout")
            self.assertIn('receive timeout: no message from the server on slot "zetl_0"', z.log())
            # The frozen walsender still holds the slot: zetl retries until it is gone.
            wait_for(lambda: "is active for PID" in z.log(), timeout=30, what="busy-slot retry")
        finally:
            os.kill(pid, signal.SIGCONT)
        self.pg.psql(f"SELECT pg_terminate_backend({pid})")
        wait_for(lambda: full_log(z).count("replication started") >= 2, timeout=90,
                 what="reconnect")
        self.sql("INSERT INTO tenant_a.users VALUES (1, 'after')")
        wait_for(lambda: os.path.isdir(os.path.join(self.work, "archive", "zetl_0")) and
                 ("tenant_a", "1") in (self.archived_ids() or []), what="archived row")
        self.assertEqual(z.kill(signal.SIGTERM), 0, z.log())


if __name__ == "__main__":
    main()
