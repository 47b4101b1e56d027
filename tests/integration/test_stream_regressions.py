"""Regressions the crash suite (tests/chaos/) found in the stream, made
deterministic.

A transaction larger than logical_decoding_work_mem (64kB in the harness) is
streamed by pgoutput (protocol 3, streaming on); the Relation message of its
first change travels inside the stream block, and the server marks the
schema as sent when the stream commits.  When the server sends such a
transaction again after a reconnect (the slot's confirmed flush is behind the
archive, here because the warehouse apply is blocked), zetl skips it as
already archived; it must still take the schema from it, or the next change
of that table fails with "change for relation N before its Relation message".

And a run must not report success while its warehouse catch-up (archived
batches the warehouse has not applied yet) failed.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from zetltest import Cluster, Zetl, config, main, run_zetl


class StreamRegressionsTest(unittest.TestCase):
    def test_skipped_streamed_transaction_keeps_its_relation_messages(self):
        src = Cluster(extra_conf="wal_sender_timeout = 3s\n")
        wh = Cluster(wal_level="replica")
        work = tempfile.mkdtemp(prefix="zetl-regress-")
        z = None
        locker = None
        try:
            src.createdb("r")
            wh.createdb("rw")
            src.psql("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.users (id int PRIMARY KEY, "
                     "name text); CREATE TABLE tenant_a.other (id int PRIMARY KEY)", db="r")
            z = Zetl(work, config(src, "r", extra=f"""warehouse:
  kind: postgres
  dsn: "{wh.dsn('rw')}"
  schema: zetl_raw
"""))
            self.assertEqual(z.run_once(), 0, z.log())
            # The warehouse tables exist (a first small transaction), then block the apply.
            src.psql("INSERT INTO tenant_a.other VALUES (0)", db="r")
            self.assertEqual(z.run_once(), 0, z.log())
            z.start()
            time.sleep(1)
            locker = subprocess.Popen(
                ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(wh.port), "-U", "postgres",
                 "-d", "rw"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            locker.stdin.write(b"BEGIN; LOCK TABLE zetl_raw._zetl_offsets IN ACCESS EXCLUSIVE "
                               b"MODE;\n")
            locker.stdin.flush()
            time.sleep(0.5)
            # First use of tenant_a.users in this walsender session: a streamed transaction.
            src.psql("INSERT INTO tenant_a.users SELECT g, repeat('x', 200) FROM "
                     "generate_series(1, 5000) g", db="r")
            time.sleep(2)  # archived (sealed after max_age_ms), not applied, slot not confirmed
            # The replication connection breaks: the slot's confirmed flush is from before
            # the big transaction, which the server sends again after the reconnect.
            src.psql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                     "WHERE active", db="r")
            locker.stdin.write(b"COMMIT;\n")
            locker.stdin.close()
            locker.wait()
            locker = None
            time.sleep(3)
            src.psql("INSERT INTO tenant_a.users VALUES (100000, 'after')", db="r")
            rc, out, err = run_zetl(["verify", "--config", z.config], cwd=work)
            log = z.log()
            self.assertIsNone(z.proc.poll(), log)
            self.assertNotIn("before its Relation message", log)
            self.assertEqual(rc, 0, out + err + log)
            self.assertEqual(wh.psql("SELECT count(*) FROM zetl_raw.users", db="rw"), [["5001"]])
            self.assertEqual(z.kill(signal.SIGTERM), 0, z.log())
        finally:
            if locker is not None:
                locker.kill()
            try:
                Zetl.kill_all()
            finally:
                src.destroy()
                wh.destroy()
                shutil.rmtree(work, ignore_errors=True)

    def test_once_fails_when_the_warehouse_catch_up_fails(self):
        src = Cluster()
        wh = Cluster(wal_level="replica")
        work = tempfile.mkdtemp(prefix="zetl-regress-")
        try:
            src.createdb("r")
            wh.createdb("rw")
            src.psql("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.users (id int PRIMARY KEY, "
                     "name text)", db="r")
            # Archive only first: batches the warehouse has never seen.
            z = Zetl(work, config(src, "r"))
            self.assertEqual(z.run_once(), 0, z.log())
            src.psql("INSERT INTO tenant_a.users SELECT g, 'n' FROM generate_series(1, 50) g",
                     db="r")
            self.assertEqual(z.run_once(), 0, z.log())
            files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(work, "archive"))
                     for f in fs if f.endswith(".csv.zst")]
            self.assertTrue(files)
            with open(files[0], "r+b") as f:  # the batch no longer matches its manifest
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
                f.seek(-1, os.SEEK_END)
                f.write(bytes([last[0] ^ 0xFF]))
            before = z.log().count("caught up; exiting")
            z = Zetl(work, config(src, "r", extra=f"""warehouse:
  kind: postgres
  dsn: "{wh.dsn('rw')}"
  schema: zetl_raw
"""))
            self.assertEqual(z.run_once(), 1, z.log())
            self.assertIn("does not match its manifest", z.log())
            self.assertEqual(z.log().count("caught up; exiting"), before, z.log())
        finally:
            Zetl.kill_all()
            src.destroy()
            wh.destroy()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
