"""The command line a newcomer meets: `zetl help`, `zetl COMMAND --help`,
`--version`, `zetl check` naming a source role that may not replicate
before anything else (against a real PostgreSQL), messages about a malformed
DSN that never show its password, and a bad buffer.dir named with the config
file and line before anything is connected to."""

import json
import os
import re
import shutil
import socket
import tempfile
import unittest

from zetltest import SOURCE_DIR, Cluster, Zetl, config, main, run_zetl

# Every command of the overview, with the options its page must list.
COMMANDS = {
    "run": ["--config FILE", "--once"],
    "verify": ["--config FILE"],
    "check": ["--config FILE"],
    "apply-batch": ["--config FILE"],
    "replay": ["--from LSN|TIME", "--to LSN|TIME", "--tenant T", "--table X", "--into SCHEMA"],
    "snapshot": ["--tenant T", "--table X"],
    "load": ["--from earliest|TIME", "--into SCHEMA"],
    "tenant": ["--config FILE"],
    "resync": ["--all", "--rebuild"],
    "slots": ["--config FILE"],
    "bench": ["--config FILE"],
}


class HelpTest(unittest.TestCase):
    def test_overview(self):
        for args in (["help"], ["--help"]):
            rc, out, err = run_zetl(args)
            self.assertEqual(rc, 0, err)
            self.assertEqual(err, "")
            self.assertIn("Usage:", out)
            for cmd in COMMANDS:
                self.assertRegex(out, rf"\n  zetl {re.escape(cmd)} ", cmd)
        self.assertEqual(run_zetl(["help"])[1], run_zetl(["--help"])[1])

    def test_each_command(self):
        for cmd, opts in COMMANDS.items():
            with self.subTest(cmd=cmd):
                rc, page, err = run_zetl(["help", cmd])
                self.assertEqual(rc, 0, err)
                self.assertTrue(page.startswith(f"Usage:\n  zetl {cmd} "), page)
                self.assertIn("Options:\n", page)
                self.assertIn("--help", page)
                self.assertIn("Exit status:", page)
                for o in opts:
                    self.assertIn(o, page)
                if cmd == "bench":
                    continue  # its --help goes on with the harness's options (below)
                rc, out, err = run_zetl([cmd, "--help"])
                self.assertEqual((rc, out, err), (0, page, ""))
        # Subcommands name the same page; options before --help do not matter.
        self.assertEqual(run_zetl(["tenant", "purge", "--help"])[1], run_zetl(["help", "tenant"])[1])
        self.assertEqual(run_zetl(["help", "slots", "regroup"])[1], run_zetl(["help", "slots"])[1])
        self.assertEqual(run_zetl(["replay", "--config", "x.yaml", "--help"])[:2],
                         (0, run_zetl(["help", "replay"])[1]))

    def test_bench_help_delegates_to_the_harness(self):
        rc, out, err = run_zetl(["bench", "--help"],
                                env={"ZETL_BENCH_DIR": os.path.join(SOURCE_DIR, "bench")})
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith(run_zetl(["help", "bench"])[1]))
        self.assertIn("--rows", out)  # the harness's own options
        self.assertIn("insert-1m", out)

    def test_load_arguments(self):
        rc, out, err = run_zetl(["load", "--config", "x.yaml", "--from", "yesterday"])
        self.assertEqual((rc, out), (2, ""))
        self.assertIn('--from "yesterday": expected earliest or a time', err)
        rc, out, err = run_zetl(["load", "--config", "x.yaml", "--to", "1/0"])
        self.assertEqual((rc, out), (2, ""))
        self.assertIn("--to only applies", err)
        rc, _, err = run_zetl(["run", "--config", "x.yaml", "--into", "s"])
        self.assertEqual(rc, 2)
        self.assertIn("only apply to \"zetl replay\"", err)

    def test_unknown_command(self):
        for args in (["help", "foo"], ["foo", "--help"], ["foo"]):
            rc, out, err = run_zetl(args)
            self.assertEqual(rc, 2, args)
            self.assertEqual(out, "")
            self.assertIn('unknown command "foo"', err)
        rc, out, err = run_zetl(["help", "slots", "frob"])
        self.assertEqual((rc, out), (2, ""))
        self.assertIn("slots frob", err)
        rc, _, err = run_zetl(["help", "run", "extra"])
        self.assertEqual(rc, 2)
        self.assertIn('"extra"', err)

    def test_version(self):
        rc, out, err = run_zetl(["--version"])
        self.assertEqual((rc, err), (0, ""))
        self.assertRegex(out, r"^zetl [0-9]+\.[0-9]+\.[0-9]+\n$")
        for args in (["--version", "x"], ["--version", "--help"], ["run", "--version"],
                     ["run", "--config", "x.yaml", "--version"]):
            rc, out, err = run_zetl(args)
            self.assertEqual((rc, out), (2, ""), args)
            self.assertIn("--version", err)


class LogFormatTest(unittest.TestCase):
    def test_json_lines(self):
        work = tempfile.mkdtemp(prefix="zetl-test-")
        try:
            cfg = os.path.join(work, "z.yaml")
            with open(cfg, "w") as f:
                f.write('source:\n  dsn: "host=127.0.0.1 port=1 dbname=x user=zetl '
                        'connect_timeout=2"\n  tenants:\n    schemas: ["tenant_*"]\n'
                        "buffer:\n  dir: ./zetl-data\narchive:\n  url: file://./archive\n"
                        "log:\n  format: json\n")
            rc, _, err = run_zetl(["run", "--once", "--config", cfg], cwd=work)
            self.assertEqual(rc, 1, err)
            lines = [json.loads(ln) for ln in err.splitlines()]
            self.assertGreaterEqual(len(lines), 1, err)
            for ln in lines:
                self.assertEqual(set(ln), {"ts", "level", "pid", "msg"})
                self.assertRegex(ln["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
                self.assertIsInstance(ln["pid"], int)
            self.assertEqual(lines[0]["level"], "fatal")
            self.assertIn('"127.0.0.1", port 1', lines[0]["msg"])
            # ZETL_LOG_FORMAT overrides the file.
            rc, _, err = run_zetl(["run", "--once", "--config", cfg], cwd=work,
                                  env={"ZETL_LOG_FORMAT": "text"})
            self.assertEqual(rc, 1)
            self.assertRegex(err.splitlines()[0], r"^\d{4}-\d\d-\d\d [0-9:.]+ UTC \[\d+\] FATAL:  ")
        finally:
            shutil.rmtree(work, ignore_errors=True)


class MalformedDsnTest(unittest.TestCase):
    """libpq quotes a connection string it cannot parse, or the piece it stumbled
    on: the message must still say what is wrong, with every password masked.
    Nothing listens anywhere: the DSNs fail before a connection is tried."""

    SRC_PW = "src-s3cret"
    WH_PW = "wh-s3cret"

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        self.cfg = os.path.join(self.work, "zetl.yaml")

    def tearDown(self):
        shutil.rmtree(self.work, ignore_errors=True)

    def write(self, src_dsn, wh_dsn):
        with open(self.cfg, "w") as f:
            f.write(f'source:\n  dsn: "{src_dsn}"\n  tenants:\n    schemas: ["tenant_*"]\n'
                    "buffer:\n  dir: ./zetl-data\narchive:\n  url: file://./archive\n"
                    f'warehouse:\n  kind: postgres\n  dsn: "{wh_dsn}"\n')

    def zetl(self, *args, env=None):
        rc, out, err = run_zetl([*args, "--config", self.cfg], cwd=self.work, env=env)
        for pw in (self.SRC_PW, self.WH_PW, "%zz"):
            self.assertNotIn(pw, out + err, args)
        return rc, out + err

    def test_source_uri_quoted_whole(self):
        # An unclosed IPv6 bracket: libpq quotes the whole URI.
        self.write(f"postgresql://u:{self.SRC_PW}@[::1/db", "host=127.0.0.1 port=1 dbname=w")
        for args in (["check"], ["run", "--once"], ["verify"], ["snapshot"]):
            rc, text = self.zetl(*args)
            self.assertEqual(rc, 1, (args, text))
            self.assertIn('matching "]" in IPv6 host address in URI: '
                          '"postgresql://u:********@[::1/db"', text, args)
        # From the environment too.
        rc, text = self.zetl("check", env={"ZETL_SOURCE_DSN": f"postgresql://u:{self.SRC_PW}@[::1"})
        self.assertEqual(rc, 1, text)
        self.assertIn('in URI: "postgresql://u:********@[::1"', text)

    def test_password_quoted_alone(self):
        # A bad percent-escape in the password: libpq quotes the password itself.
        self.write(f"postgresql://u:{self.SRC_PW}%zz@127.0.0.1:1/db",
                   f"postgresql://w:{self.WH_PW}%zz@127.0.0.1:1/db")
        rc, text = self.zetl("check")
        self.assertEqual(rc, 1, text)
        self.assertIn('source: could not connect: invalid percent-encoded token: "********"',
                      text)
        # The warehouse's own connection (sinks/warehouse), reached without the source.
        rc, text = self.zetl("tenant", "purge", "tenant_a")
        self.assertEqual(rc, 1, text)
        self.assertIn('invalid percent-encoded token: "********"', text)
        # The key/value form: an unterminated quote after the password.
        self.write("host=127.0.0.1 port=1 dbname=x", f"host=127.0.0.1 password='{self.WH_PW}")
        rc, text = self.zetl("tenant", "purge", "tenant_a")
        self.assertEqual(rc, 1, text)
        self.assertIn("unterminated quoted string in connection info string", text)


class BufferDirTest(unittest.TestCase):
    """A buffer.dir zetl cannot use is named with the file and line, like any
    config error, before anything is connected to."""

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        self.blocker = os.path.join(self.work, "file")
        open(self.blocker, "w").close()
        # A listener that would see any connection zetl made (source, warehouse).
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        port = self.listener.getsockname()[1]
        self.cfg = os.path.join(self.work, "zetl.yaml")
        with open(self.cfg, "w") as f:
            f.write(f'source:\n  dsn: "host=127.0.0.1 port={port} dbname=x connect_timeout=2"\n'
                    '  tenants:\n    schemas: ["tenant_*"]\n'
                    f"buffer:\n  max_rows: 10\n  dir: {self.blocker}/sub\n"
                    "archive:\n  url: file://./archive\n"
                    f'warehouse:\n  kind: postgres\n  dsn: "host=127.0.0.1 port={port} '
                    'dbname=w connect_timeout=2"\n'
                    f"kafka:\n  brokers: 127.0.0.1:{port}\n")

    def tearDown(self):
        self.listener.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def test_named_before_connecting(self):
        want = (f'zetl.yaml:7: buffer.dir: could not create directory "{self.blocker}/sub": '
                "Not a directory")
        for args in (["run", "--once"], ["run"], ["snapshot"], ["resync", "--all"], ["load"]):
            rc, _, err = run_zetl([*args, "--config", self.cfg], cwd=self.work, timeout=30)
            self.assertEqual(rc, 1, (args, err))
            self.assertIn(want, err, args)
            self.assertNotIn("could not connect", err, args)
            with self.assertRaises(BlockingIOError, msg=f"{args} connected"):
                self.listener.accept()[0].close()

        # A parent zetl may not write to: named the same way (root may write anywhere).
        if os.geteuid() != 0:
            ro = os.path.join(self.work, "ro")
            os.mkdir(ro, 0o500)
            with open(self.cfg) as f:
                text = f.read().replace(f"{self.blocker}/sub", f"{ro}/data")
            with open(self.cfg, "w") as f:
                f.write(text)
            rc, _, err = run_zetl(["run", "--once", "--config", self.cfg], cwd=self.work)
            self.assertEqual(rc, 1, err)
            self.assertIn(f'zetl.yaml:7: buffer.dir: could not create directory "{ro}/data": '
                          "Permission denied", err)


class CheckRoleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Cluster()
        cls.pg.psql("""
CREATE ROLE norepl LOGIN PASSWORD 'pw';
CREATE SCHEMA tenant_a;
CREATE TABLE tenant_a.users (id int PRIMARY KEY, name text);
CREATE TABLE tenant_a.events (at timestamptz, what text);
ALTER TABLE tenant_a.events REPLICA IDENTITY NOTHING;
GRANT USAGE ON SCHEMA tenant_a TO norepl;
""")

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        self.z = Zetl(self.work, config(self.pg, "postgres",
                                        dsn=self.pg.dsn(user="norepl", password="pw")))

    def tearDown(self):
        shutil.rmtree(self.work, ignore_errors=True)

    def findings(self):
        rc, out, err = run_zetl(["check", "--config", self.z.config], cwd=self.work)
        lines = out.splitlines()
        return rc, [ln for ln in lines if not ln.startswith("ok ") and "error(s)" not in ln], out

    def test_role_without_replication_is_named_first(self):
        rc, problems, out = self.findings()
        self.assertEqual(rc, 1, out)
        self.assertTrue(problems, out)
        first = problems[0]
        self.assertTrue(first.startswith("error"), out)
        self.assertTrue(first.startswith('error    source role "norepl" lacks the REPLICATION '
                                         'privilege'), out)
        self.assertIn('ALTER ROLE "norepl" REPLICATION', first)
        self.assertIn('GRANT rds_replication TO "norepl"', first)
        # It comes right after the connection, and the other errors still follow it.
        self.assertIn("source: connected", out.splitlines()[0])
        self.assertEqual(out.splitlines()[1], first)
        self.assertTrue(any("no SELECT privilege" in p for p in problems[1:]), out)
        self.assertTrue(any("replica identity nothing" in p for p in problems[1:]), out)
        self.assertEqual(sum("REPLICATION" in p for p in problems), 1, out)

        # Fixed as told: the role is no longer named, the other errors remain.
        self.pg.psql("ALTER ROLE norepl REPLICATION")
        try:
            rc, problems, out = self.findings()
        finally:
            self.pg.psql("ALTER ROLE norepl NOREPLICATION")
        self.assertEqual(rc, 1, out)
        self.assertIn("ok       source: the role may replicate", out)
        self.assertFalse(any("REPLICATION" in p for p in problems), out)
        errors = [p for p in problems if p.startswith("error")]
        self.assertIn("no SELECT privilege", errors[0], out)

    def test_run_names_the_role_too(self):
        rc = self.z.run_once(timeout=60)
        self.assertEqual(rc, 1, self.z.log())
        self.assertIn('source role "norepl" lacks the REPLICATION privilege', self.z.log())
        self.assertEqual(self.pg.psql("SELECT count(*) FROM pg_replication_slots"), [["0"]])


if __name__ == "__main__":
    main()
