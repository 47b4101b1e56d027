"""The command line a newcomer meets: `zetl help`, `zetl COMMAND --help`,
`--version`, and `zetl check` naming a source role that may not replicate
before anything else (against a real PostgreSQL)."""

import json
import os
import re
import shutil
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
