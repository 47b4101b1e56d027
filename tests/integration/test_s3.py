"""S3 archive: zetl's S3 client against s3rver (npm) on loopback, behind a proxy
that checks every SigV4 signature as AWS does and injects faults; what zetl
stored is read back with an independent client (s3faults.S3Client) and the
zstd CLI."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import s3faults
from zetltest import SOURCE_DIR, Cluster, Zetl, config, main, parse_csv, run_zetl, META

BUCKET = "zetl-archive"
SECRET = "S3RVER"  # s3rver's built-in key pair is S3RVER/S3RVER


def tenant_ddl(schema):
    return f"""
CREATE SCHEMA {schema};
CREATE TABLE {schema}.users (id int PRIMARY KEY, email text, name text, score numeric(10,2));
CREATE TABLE {schema}.blobs (id int PRIMARY KEY, data text);
"""


class S3ArchiveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Cluster()
        cls.s3 = s3faults.S3rver(SOURCE_DIR, BUCKET)

    @classmethod
    def tearDownClass(cls):
        cls.s3.stop()
        cls.pg.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        self.name = self.id().split(".")[-1].lower()[:40]
        self.db = self.pg.createdb(self.name)
        self.prefix = f"runs/{self.name}"
        self.proxy = s3faults.FaultProxy(f"127.0.0.1:{self.s3.port}")
        self.client = s3faults.S3Client(self.s3.endpoint, BUCKET)
        self.env = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": SECRET,
                    "ZETL_S3_TIMEOUT_MS": "1500"}
        self.sql(tenant_ddl("tenant_a") + tenant_ddl("tenant_b"))

    def tearDown(self):
        self.proxy.stop()
        Zetl.kill_all()
        self.pg.drop_slots(self.db)
        self.pg.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def sql(self, text):
        return self.pg.psql(text, db=self.db)

    def zetl(self, url=None, endpoint=None, s3_extra="", buffer_extra="", extra=""):
        text = config(self.pg, self.db, buffer_extra=buffer_extra, extra=extra)
        text = text.replace("  url: file://./archive\n",
                            f"  url: {url or f's3://{BUCKET}/{self.prefix}'}\n"
                            f"  s3:\n    endpoint: {endpoint or self.proxy.endpoint}\n"
                            f"    region: us-east-1\n{s3_extra}")
        return Zetl(self.work, text)

    def run_once(self, z, env=None, timeout=300):
        """One `zetl run --once`; z.log() then shows this run only."""
        e = dict(self.env)
        e.update(env or {})
        open(z.stderr_path, "w").close()
        return z.run_once(env=e, timeout=timeout)

    def slot_flush(self):
        rows = self.sql(f"SELECT confirmed_flush_lsn FROM pg_replication_slots "
                        f"WHERE database = '{self.db}'")
        return rows[0][0] if rows else None

    def assert_flush_at_least(self, end_lsn, msg=None):
        """The slot is confirmed up to the last batch (or beyond, over idle WAL)."""
        def lsn(text):
            hi, lo = text.split("/")
            return int(hi, 16) << 32 | int(lo, 16)
        self.assertGreaterEqual(lsn(self.slot_flush()), lsn(end_lsn), msg)

    def slots(self):
        return self.sql(f"SELECT slot_name FROM pg_replication_slots WHERE database = '{self.db}'")

    def read_archive(self):
        """Every complete batch under the prefix, checked like a reader would:
        manifest, copy.manifest, sizes, sha256, rows.  Returns (batches, rows)."""
        keys = self.client.list(self.prefix + "/")
        batches, rows = [], []
        for key in sorted(k for k in keys if k.endswith("/manifest.json")):
            bdir = key[:-len("manifest.json")]
            man = json.loads(self.client.get(key))
            name = bdir.rstrip("/").split("/")[-1]
            self.assertEqual(name, "%016X-%016X" % tuple(
                (int(a, 16) << 32) | int(b, 16) for a, b in
                (man["first_lsn"].split("/"), man["last_lsn"].split("/"))))
            copy = json.loads(self.client.get(bdir + "copy.manifest"))
            self.assertEqual(len(copy["entries"]), len(man["files"]))
            for ent, fi in zip(copy["entries"], man["files"]):
                self.assertEqual(ent["url"], f"s3://{BUCKET}/{bdir}{fi['file']}")
                self.assertIs(ent["mandatory"], True)
                self.assertEqual(ent["meta"]["content_length"], fi["bytes"])
                # Redshift loads one shape per COPY: each file has a manifest of its own.
                own = json.loads(self.client.get(bdir + fi["file"] + ".manifest"))
                self.assertEqual(own["entries"], [ent])
            batches.append(man)
            for fi in man["files"]:
                data = self.client.get(bdir + fi["file"])
                self.assertEqual(len(data), fi["bytes"])
                self.assertEqual(keys[bdir + fi["file"]], fi["bytes"])
                self.assertEqual(hashlib.sha256(data).hexdigest(), fi["sha256"])
                text = subprocess.run(["zstd", "-dc"], input=data, check=True,
                                      stdout=subprocess.PIPE).stdout.decode()
                names = META + [man["tenant_column"]] + [c["name"] for c in fi["columns"]]
                parsed = parse_csv(text)
                self.assertEqual(len(parsed), fi["rows"])
                for r in parsed:
                    d = dict(zip(names, r))
                    d["_table"] = fi["table"]
                    d["_batch"] = name
                    rows.append(d)
        rows.sort(key=lambda d: (int(d["_zetl_lsn"]), int(d["_zetl_seq"])))
        return batches, rows

    def assert_one_fatal_line(self, z, *needles):
        log = z.log()
        fatal = [l for l in log.splitlines() if "FATAL" in l]
        self.assertEqual(len(fatal), 1, log)
        for n in needles:
            self.assertIn(n, fatal[0], log)
        return fatal[0]

    # ---- the archive on S3 ----

    def test_archive_on_s3_read_back_independently(self):
        z = self.zetl()
        self.assertEqual(self.run_once(z), 0, z.log())
        self.sql("""
INSERT INTO tenant_a.users VALUES (1, 'a1@x', 'Ann', 1.50), (2, 'a2@x', 'NULL', NULL);
INSERT INTO tenant_b.users VALUES (1, 'b1@x', 'say "hi", \\o/', 3);
BEGIN;
UPDATE tenant_a.users SET name = '' WHERE id = 1;
DELETE FROM tenant_b.users WHERE id = 1;
INSERT INTO tenant_b.blobs VALUES (7, 'line1
line2');
COMMIT;
""")
        # A session token and a credentials file profile: both signed and sent.
        creds = os.path.join(self.work, "credentials")
        with open(creds, "w") as f:
            f.write("[default]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n\n"
                    f"[zetl]\naws_access_key_id = S3RVER\naws_secret_access_key = {SECRET}\n"
                    "aws_session_token = tok/en+=\n")
        self.proxy.token = "tok/en+="
        env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
               "AWS_SHARED_CREDENTIALS_FILE": creds, "AWS_PROFILE": "zetl"}
        self.assertEqual(self.run_once(z, env), 0, z.log())
        self.assertEqual(self.proxy.sig_failures, [])
        self.assertNotIn("tok/en+=", z.log())
        self.proxy.token = None
        batches, rows = self.read_archive()
        got = [(r["_table"], r["tenant_id"], r["_zetl_op"], r["id"], r.get("name"))
               for r in rows]
        self.assertEqual(got, [
            ("users", "tenant_a", "I", "1", "Ann"),
            ("users", "tenant_a", "I", "2", "NULL"),
            ("users", "tenant_b", "I", "1", 'say "hi", \\o/'),
            ("users", "tenant_a", "U", "1", ""),
            ("users", "tenant_b", "D", "1", None),
            ("blobs", "tenant_b", "I", "7", None),
        ])
        self.assertEqual([r["data"] for r in rows if r["_table"] == "blobs"], ["line1\nline2"])
        # Every PUT of a batch precedes its manifest.json; copy.manifest too.
        puts = [t for m, t, o in self.proxy.log if m == "PUT"]
        for man in batches:
            mi = max(i for i, t in enumerate(puts) if t.endswith("/manifest.json"))
            self.assertTrue(all(i < mi for i, t in enumerate(puts)
                                if t.endswith(".csv.zst") or t.endswith(".manifest")))
        # The slot moved to the archived end.
        self.assert_flush_at_least(batches[-1]["end_lsn"])

        # Restart with nothing new: no new batch, no duplicate.
        before = sorted(self.client.list(self.prefix + "/"))
        self.assertEqual(self.run_once(z), 0, z.log())
        self.assertEqual(sorted(self.client.list(self.prefix + "/")), before)
        self.sql("INSERT INTO tenant_a.users VALUES (3, 'a3@x', 'Cy', 0)")
        self.assertEqual(self.run_once(z), 0, z.log())
        batches2, rows2 = self.read_archive()
        self.assertEqual(len(batches2), len(batches) + 1)
        keys = [(r["_zetl_lsn"], r["_zetl_seq"]) for r in rows2]
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(len(rows2), len(rows) + 1)

    def test_multipart_upload_of_a_large_file(self):
        z = self.zetl(s3_extra="    part_size: 5MiB\n",
                      buffer_extra="  max_bytes: 1GiB\n")
        self.assertEqual(self.run_once(z), 0, z.log())
        # ~105 MB of hex text in one transaction: a .csv.zst of ~52 MB, 10+ parts of 5 MiB.
        self.sql("INSERT INTO tenant_a.blobs SELECT g, (SELECT string_agg(md5((g * 64 + k)::text), "
                 "'') FROM generate_series(1, 32) k) FROM generate_series(1, 100000) g")
        self.assertEqual(self.run_once(z), 0, z.log())
        self.assertEqual(self.proxy.sig_failures, [])
        self.assertEqual(self.proxy.count("POST", r"blobs\.csv\.zst\?uploads="), 1)
        parts = self.proxy.count("PUT", r"blobs\.csv\.zst\?partNumber=\d+&uploadId=")
        self.assertGreaterEqual(parts, 10)
        self.assertEqual(self.proxy.count("POST", r"blobs\.csv\.zst\?uploadId="), 1)
        batches, rows = self.read_archive()
        big = [f for b in batches for f in b["files"] if f["table"] == "blobs"]
        self.assertEqual(len(big), 1)
        self.assertGreater(big[0]["bytes"], 50 * 1000 * 1000)  # "a 50 MB object"
        self.assertEqual(len(rows), 100000)
        self.assertEqual(rows[-1]["data"], "".join(
            hashlib.md5(str(100000 * 64 + k).encode()).hexdigest() for k in range(1, 33)))

    def test_listing_that_needs_pagination(self):
        # One batch per run, and two keys per listing page.
        z = self.zetl()
        with open(z.config) as f:
            text = f.read()
        with open(z.config, "w") as f:
            f.write(text.replace("max_rows: 100000", "max_rows: 1"))
        self.assertEqual(self.run_once(z), 0, z.log())
        env = {"ZETL_S3_LIST_PAGE": "2"}
        for i in range(8):
            self.sql(f"INSERT INTO tenant_a.users VALUES ({i}, 'x', 'n{i}', {i})")
            self.assertEqual(self.run_once(z, env), 0, z.log())
        batches, rows = self.read_archive()
        self.assertEqual(len(batches), 8)
        # An incomplete batch (objects without manifest.json) is ignored and cleaned up.
        stray = f"{self.prefix}/{batches[0]['stream']}/FFFFFFFFFFFFFFF0-FFFFFFFFFFFFFFF0/users.csv.zst"
        self.client.put(stray, b"junk")
        self.proxy.clear()
        self.sql("INSERT INTO tenant_a.users VALUES (100, 'x', 'late', 1)")
        self.assertEqual(self.run_once(z, env), 0, z.log())
        self.assertGreaterEqual(self.proxy.count("GET", r"continuation-token="), 5)
        self.assertEqual(self.proxy.count("DELETE", r"FFFFFFFFFFFFFFF0"), 1)
        self.assertNotIn(stray, self.client.list(self.prefix + "/"))
        batches, rows = self.read_archive()
        self.assertEqual(len(batches), 9)
        self.assertEqual([r["name"] for r in rows], [f"n{i}" for i in range(8)] + ["late"])

    def test_pipeline_to_postgres_warehouse_reads_batches_from_s3(self):
        wh = Cluster(wal_level="replica")
        try:
            whdb = wh.createdb("wh")
            z = self.zetl(extra=f"""warehouse:
  kind: postgres
  dsn: "{wh.dsn(whdb)}"
  schema: zetl_raw
""")
            self.assertEqual(self.run_once(z), 0, z.log())
            self.sql("INSERT INTO tenant_a.users SELECT g, g || '@a', md5(g::text), g / 7.0 "
                     "FROM generate_series(1, 500) g;"
                     "INSERT INTO tenant_b.users SELECT g, g || '@b', NULL, 1 "
                     "FROM generate_series(1, 300) g;"
                     "UPDATE tenant_a.users SET name = 'x' WHERE id % 3 = 0;"
                     "DELETE FROM tenant_b.users WHERE id > 250;")
            # Fetching a batch back survives a cut-off body.
            self.proxy.add("GET", r"\.csv\.zst$", ("partial",), times=1)
            self.assertEqual(self.run_once(z), 0, z.log())
            self.assertGreaterEqual(self.proxy.count("GET", r"\.csv\.zst$", "partial"), 1)
            self.assertIn("Recv failure", z.log())
            # verify compares against the source's current position: keep zetl running.
            z.start(env=self.env)
            try:
                rc, out, err = run_zetl(["verify", "--config", z.config], cwd=self.work,
                                        env=self.env)
                self.assertEqual(rc, 0, out + err + z.log())
            finally:
                self.assertEqual(z.kill(signal.SIGTERM), 0, z.log())
            self.assertEqual(wh.psql("SELECT count(*) FROM zetl_raw.users", db=whdb), [["750"]])
            # The offsets row names the archived batch, not the local copy.
            batch = wh.psql("SELECT batch FROM zetl_raw._zetl_offsets", db=whdb)[0][0]
            self.assertRegex(batch, r"^[0-9A-F]{16}-[0-9A-F]{16}$")
            # Fetched copies are removed after the apply.
            fetch = os.path.join(self.work, "zetl-data", "s3-fetch")
            self.assertEqual(os.listdir(fetch) if os.path.isdir(fetch) else [], [])
        finally:
            wh.destroy()

    # ---- faults ----

    def test_transient_faults_are_retried(self):
        z = self.zetl()
        self.assertEqual(self.run_once(z), 0, z.log())
        # One transaction: one batch, whatever the timing.
        self.sql("BEGIN; INSERT INTO tenant_a.users VALUES (1, 'a', 'b', 1);"
                 "INSERT INTO tenant_b.blobs VALUES (1, repeat('x', 300000)); COMMIT;")
        p = self.proxy
        p.add("PUT", r"users\.csv\.zst$", ("status", 500))
        p.add("PUT", r"users\.csv\.zst$", ("status", 503))
        p.add("PUT", r"blobs\.csv\.zst$", ("reset",))
        p.add("PUT", r"blobs\.csv\.zst$", ("status", 429))
        p.add("PUT", r"copy\.manifest$", ("stall", 5))
        p.add("PUT", r"/manifest\.json$", ("status", 503))
        p.add("HEAD", r"/manifest\.json$", ("reset",))
        t0 = time.time()
        self.assertEqual(self.run_once(z), 0, z.log())
        self.assertLess(time.time() - t0, 60)
        # One retry loop, the sink's: the S3 client makes one attempt per object and
        # the sink stores the batch again after a transient failure.  Attempts of the
        # batch: HEAD reset; users 500 + blobs reset + copy.manifest stall; users 503
        # + blobs 429; all data stored, manifest.json 503; all again, manifest.json.
        # So each data file is PUT 4 times (2 failures, then 2 successes).
        self.assertEqual(p.count("PUT", r"users\.csv\.zst$"), 4, (p.log, z.log()))
        self.assertEqual(p.count("PUT", r"users\.csv\.zst$", "200"), 2)
        self.assertEqual(p.count("PUT", r"blobs\.csv\.zst$"), 4)
        self.assertEqual(p.count("HEAD", r"/manifest\.json$"), 5)
        # The stall is retried at least once; under load a slow healthy attempt may be too.
        self.assertGreaterEqual(p.count("PUT", r"copy\.manifest$"), 2, (p.log, z.log()))
        self.assertGreaterEqual(p.count("PUT", r"copy\.manifest$", "200"), 1, (p.log, z.log()))
        self.assertEqual(p.count("PUT", r"/manifest\.json$"), 2)
        log = z.log()
        self.assertIn("500 InternalError", log)
        self.assertIn("503 SlowDown", log)
        self.assertIn("429 SlowDown", log)
        self.assertIn("retrying in", log)
        batches, rows = self.read_archive()
        self.assertEqual(len(rows), 2)
        self.assert_flush_at_least(batches[-1]["end_lsn"])

    def test_nothing_is_durable_before_the_manifest_is_stored(self):
        z = self.zetl()
        self.assertEqual(self.run_once(z), 0, z.log())
        self.sql("INSERT INTO tenant_a.users VALUES (1, 'a', 'b', 1)")
        rule = self.proxy.add("PUT", r"/manifest\.json$", ("status", 500), times=None)
        # The daemon, while every manifest PUT fails: it retries, and the slot never
        # reaches the transaction's commit (WAL of other databases before it may be
        # confirmed while zetl is idle: that is safe).
        flushes = []
        open(z.stderr_path, "w").close()
        z.start(env=self.env)
        deadline = time.time() + 60
        while rule.hits < 6:
            self.assertLess(time.time(), deadline, z.log())
            flushes.append(self.slot_flush())
            time.sleep(0.1)
        time.sleep(1)
        log = z.log()
        self.assertIn("500 InternalError", log, log)
        self.assertIn("retrying in", log, log)
        # The data files may be there; the batch is not: no manifest, slot unmoved.
        keys = self.client.list(self.prefix + "/")
        self.assertTrue(any(k.endswith(".csv.zst") for k in keys), keys)
        self.assertTrue(any(k.endswith("copy.manifest") for k in keys), keys)
        self.assertFalse(any(k.endswith("manifest.json") for k in keys), (keys, log))
        flushes.append(self.slot_flush())
        # A stop while S3 is down cannot make the batch durable: exit 1, slot not past it.
        self.assertEqual(z.kill(signal.SIGTERM), 1, z.log())
        self.assertIn("stopped while a sink was unavailable", z.log())
        flushes.append(self.slot_flush())
        # Once S3 works again the batch comes again from the slot and is stored whole, once.
        self.proxy.clear()
        self.assertEqual(self.run_once(z), 0, z.log())
        batches, rows = self.read_archive()
        self.assertEqual([(r["_zetl_op"], r["id"]) for r in rows], [("I", "1")], z.log())
        self.assertEqual(len(batches), 1, z.log())
        self.assert_flush_at_least(batches[-1]["end_lsn"], (z.log(), self.proxy.log))

        def lsn(text):
            hi, lo = text.split("/")
            return int(hi, 16) << 32 | int(lo, 16)
        end = lsn(batches[-1]["end_lsn"])
        self.assertTrue(all(lsn(f) < end for f in flushes), (flushes, batches[-1]["end_lsn"]))

    def test_access_denied_on_put_is_fatal_with_s3_code(self):
        z = self.zetl()
        self.assertEqual(self.run_once(z), 0, z.log())
        before = self.slot_flush()
        self.sql("INSERT INTO tenant_a.users VALUES (1, 'a', 'b', 1)")
        self.proxy.add("PUT", r"users\.csv\.zst$", ("status", 403), times=None)
        self.assertEqual(self.run_once(z), 1, z.log())
        self.assertEqual(self.proxy.count("PUT", r"users\.csv\.zst$"), 1)  # not retried
        self.assertRegex(z.log(), r"s3 PUT s3://zetl-archive/runs/\S+/users\.csv\.zst: "
                                  r"403 AccessDenied: Access Denied")
        self.assertEqual(self.slot_flush(), before)

    # ---- bad input at start: one line, exit 1, no slot created ----

    def test_bucket_missing(self):
        z = self.zetl(url="s3://no-such-bucket/x")
        self.assertEqual(self.run_once(z), 1, z.log())
        self.assert_one_fatal_line(z, "s3://no-such-bucket/x", "404 NoSuchBucket")
        self.assertEqual(self.slots(), [])

    def test_access_denied(self):
        z = self.zetl()
        self.assertEqual(self.run_once(z, {"AWS_ACCESS_KEY_ID": "NOBODY"}), 1, z.log())
        self.assert_one_fatal_line(z, "403 InvalidAccessKeyId")
        self.proxy.add("GET", r"list-type=2", ("status", 403), times=None)
        self.assertEqual(self.run_once(z), 1, z.log())
        self.assert_one_fatal_line(z, "403 AccessDenied: Access Denied")
        self.assertEqual(self.slots(), [])

    def test_wrong_region(self):
        self.proxy.region = "eu-west-1"
        z = self.zetl()
        self.assertEqual(self.run_once(z), 1, z.log())
        self.assert_one_fatal_line(z, "AuthorizationHeaderMalformed",
                                   "set archive.s3.region: eu-west-1")
        self.assertEqual(self.slots(), [])

    def test_endpoint_unreachable(self):
        port = s3faults._free_port()
        z = self.zetl(endpoint=f"http://127.0.0.1:{port}")
        t0 = time.time()
        secrets = {"AWS_SECRET_ACCESS_KEY": "sekrit-DO-NOT-LOG", "AWS_SESSION_TOKEN": "tok-DO-NOT-LOG"}
        self.assertEqual(self.run_once(z, dict(secrets, ZETL_LOG_LEVEL="debug")), 1, z.log())
        self.assertNotIn("DO-NOT-LOG", z.log())
        self.assertLess(time.time() - t0, 30)
        self.assert_one_fatal_line(z, f"could not connect to http://127.0.0.1:{port}")
        self.assertEqual(self.slots(), [])

    def test_no_credentials(self):
        z = self.zetl()
        env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
               "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.work, "none")}
        self.assertEqual(self.run_once(z, env), 1, z.log())
        self.assert_one_fatal_line(z, "no AWS credentials")
        self.assertEqual(self.slots(), [])


if __name__ == "__main__":
    main()
