"""Secrets and file modes: DSNs read from secret files (source.dsn_file,
ZETL_WAREHOUSE_DSN_FILE) as Docker and Kubernetes mount them, never printed;
secret files other users can access refused; archive and buffer.dir files
created 0600 and directories 0700 whatever the caller's umask."""

import os
import shutil
import stat
import tempfile
import unittest

from zetltest import PASSWORD, Cluster, Zetl, config, main, run_zetl


class SecretsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Cluster()

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        name = self.id().split(".")[-1].lower()[:40]
        self.db = self.pg.createdb(name)
        self.whdb = self.pg.createdb(name + "_wh")
        # Files zetl creates must not inherit a permissive umask from its caller.
        self.old_umask = os.umask(0o022)

    def tearDown(self):
        os.umask(self.old_umask)
        Zetl.kill_all()
        self.pg.drop_slots(self.db)
        self.pg.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        self.pg.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def secret(self, name, text, mode):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def cfg(self, src_secret, wh_extra=""):
        # No DSN in the file at all: the source's comes from source.dsn_file.
        text = config(self.pg, self.db, extra="warehouse:\n  kind: postgres\n")
        lines = [ln for ln in text.splitlines(True) if not ln.startswith("  dsn:")]
        text = "".join(lines).replace("source:\n", f"source:\n  dsn_file: {src_secret}\n", 1)
        return text + wh_extra

    def modes_under(self, root):
        """{relative path: mode} of every file and directory under root (root included)."""
        out = {".": stat.S_IMODE(os.stat(root).st_mode)}
        for d, dirs, files in os.walk(root):
            for n in dirs + files:
                p = os.path.join(d, n)
                out[os.path.relpath(p, root)] = stat.S_IMODE(os.lstat(p).st_mode)
        return out

    def test_dsn_files_and_private_modes(self):
        self.pg.psql("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.users (id int PRIMARY KEY, "
                     "name text); INSERT INTO tenant_a.users VALUES (1, 'snap');", db=self.db)
        src = self.secret("source-dsn", self.pg.dsn(self.db) + "\n", 0o600)
        wh = self.secret("warehouse-dsn", self.pg.dsn(self.whdb) + "\n", 0o400)
        z = Zetl(self.work, self.cfg(src))
        env = {"ZETL_WAREHOUSE_DSN_FILE": wh, "ZETL_LOG_LEVEL": "debug"}
        self.assertEqual(z.run_once(env=env), 0, z.log())
        self.pg.psql("INSERT INTO tenant_a.users VALUES (2, 'streamed');", db=self.db)
        self.assertEqual(z.run_once(env=env), 0, z.log())

        self.assertEqual(self.pg.psql("SELECT tenant_id, id, name FROM zetl_raw.users ORDER BY id",
                                      db=self.whdb),
                         [["tenant_a", "1", "snap"], ["tenant_a", "2", "streamed"]])
        self.assertIn("tenant_a", z.log())  # debug logging did run
        self.assertNotIn(PASSWORD, z.log())

        for root in ("archive", "zetl-data"):
            modes = self.modes_under(os.path.join(self.work, root))
            files = [p for p in modes if os.path.isfile(os.path.join(self.work, root, p))]
            self.assertTrue(any(p.endswith(".zst") for p in files) or root != "archive", modes)
            for p, m in modes.items():
                want = 0o600 if p in files else 0o700
                self.assertEqual(m, want, f"{root}/{p} is {oct(m)}, expected {oct(want)}")

    def test_refuses_world_readable_secret(self):
        src = self.secret("source-dsn", self.pg.dsn(self.db) + "\n", 0o644)
        path = os.path.join(self.work, "zetl.yaml")
        with open(path, "w") as f:
            f.write(self.cfg(src))
        wh = self.secret("warehouse-dsn", self.pg.dsn(self.whdb), 0o600)
        rc, _, err = run_zetl(["run", "--once", "--config", path], cwd=self.work,
                              env={"ZETL_WAREHOUSE_DSN_FILE": wh})
        self.assertEqual(rc, 2, err)
        self.assertIn(f'zetl.yaml:2: source.dsn_file: secret file "{src}" is accessible by '
                      "other users (mode 0644)", err)
        self.assertNotIn(PASSWORD, err)

        # Through the environment too, and a missing file is named.
        os.chmod(src, 0o600)
        os.chmod(wh, 0o606)
        rc, _, err = run_zetl(["run", "--once", "--config", path], cwd=self.work,
                              env={"ZETL_WAREHOUSE_DSN_FILE": wh})
        self.assertEqual(rc, 2, err)
        self.assertIn(f'ZETL_WAREHOUSE_DSN_FILE: secret file "{wh}" is accessible by other '
                      "users (mode 0606)", err)
        self.assertNotIn(PASSWORD, err)
        rc, _, err = run_zetl(["run", "--once", "--config", path], cwd=self.work,
                              env={"ZETL_WAREHOUSE_DSN_FILE": wh + ".missing"})
        self.assertEqual(rc, 2, err)
        self.assertIn(f'could not open secret file "{wh}.missing"', err)

    def test_dsn_and_dsn_file_both_given(self):
        src = self.secret("source-dsn", self.pg.dsn(self.db), 0o600)
        text = self.cfg(src, wh_extra=f'  dsn: "{self.pg.dsn(self.whdb)}"\n'
                                      f"  dsn_file: {src}\n")
        path = os.path.join(self.work, "zetl.yaml")
        with open(path, "w") as f:
            f.write(text)
        rc, _, err = run_zetl(["run", "--once", "--config", path], cwd=self.work)
        self.assertEqual(rc, 2, err)
        self.assertIn("warehouse.dsn_file: give warehouse.dsn or warehouse.dsn_file, not both",
                      err)


if __name__ == "__main__":
    main()
