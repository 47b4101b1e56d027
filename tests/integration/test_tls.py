"""TLS to the source and the warehouse: `sslmode=verify-full` against PostgreSQL
servers whose certificates come from throwaway CAs this test makes with openssl.

A real pipeline (two slot groups) streams over verified TLS connections, and the
servers see every zetl connection, the walsenders included, encrypted; a wrong CA
and a host name the certificate is not for are refused, by `zetl check` and by
`zetl run`, with a message that names the connection, says the certificate could
not be verified, and does not show the password."""

import os
import shutil
import signal
import tempfile
import time
import unittest

from zetltest import CA, PASSWORD, Cluster, Zetl, config, main, run_zetl, slot_group

TENANTS = ["tenant_a", "tenant_b", "tenant_c"]
SLOT_GROUPS = 2


def ddl(schema):
    return f"""
CREATE SCHEMA {schema};
CREATE TABLE {schema}.users (id int PRIMARY KEY, email text, score numeric(10,2));
"""


def tls_dsn(cluster, db, rootcert, host="127.0.0.1", hostaddr=None):
    """verify-full: the server's certificate must chain to rootcert and be for host."""
    d = f"host={host} "
    if hostaddr:
        d += f"hostaddr={hostaddr} "
    return (d + f"port={cluster.port} dbname={db} user=zetl password={PASSWORD} "
            f"sslmode=verify-full sslrootcert={rootcert}")


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # One CA per server, so each DSN must name its own; a third that signed neither.
        cls.src_ca = CA("zetl test source CA")
        cls.wh_ca = CA("zetl test warehouse CA")
        cls.wrong_ca = CA("zetl test wrong CA")
        cls.src = Cluster(ssl=cls.src_ca)
        cls.wh = Cluster(wal_level="replica", ssl=cls.wh_ca)

    @classmethod
    def tearDownClass(cls):
        cls.src.destroy()
        cls.wh.destroy()
        for ca in (cls.src_ca, cls.wh_ca, cls.wrong_ca):
            ca.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        name = self.id().split(".")[-1].lower()[:40]
        self.db = self.src.createdb(name)
        self.whdb = self.wh.createdb(name)
        self.src.psql("".join(ddl(t) for t in TENANTS), db=self.db)
        # No ~/.postgresql/root.crt to fall back on: only sslrootcert in the DSN counts.
        self.env = {"HOME": self.work}

    def tearDown(self):
        Zetl.kill_all()
        self.src.drop_slots(self.db)
        self.src.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        self.wh.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def zetl(self, src_dsn=None, wh_dsn=None, case="run"):
        """The source by IP (an IP SAN), the warehouse by name (a DNS SAN) at 127.0.0.1;
        a work dir of its own per case."""
        work = os.path.join(self.work, case)
        os.makedirs(work, exist_ok=True)
        src_dsn = src_dsn or tls_dsn(self.src, self.db, self.src_ca.cert)
        wh_dsn = wh_dsn or tls_dsn(self.wh, self.whdb, self.wh_ca.cert, host="localhost",
                                   hostaddr="127.0.0.1")
        return Zetl(work, config(self.src, self.db, dsn=src_dsn, slot_groups=SLOT_GROUPS,
                                      extra=f'warehouse:\n  kind: postgres\n  dsn: "{wh_dsn}"\n'
                                            f"  schema: zetl_raw\n"))

    def sql(self, text):
        return self.src.psql(text, db=self.db)

    def whsql(self, text):
        return self.wh.psql(text, db=self.whdb)

    def check(self, z):
        rc, out, err = run_zetl(["check", "--config", z.config], cwd=z.workdir, env=self.env)
        self.assertNotIn(PASSWORD, out + err)
        return rc, out, err

    def slots(self):
        return self.sql(f"SELECT count(*) FROM pg_replication_slots WHERE database = '{self.db}'")

    def zetl_backends(self, cluster, db):
        """(backend_type, application_name, ssl) of the role zetl's connections to db."""
        return cluster.psql(f"SELECT a.backend_type, a.application_name, s.ssl "
                            f"FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                            f"WHERE a.usename = 'zetl' AND a.datname = '{db}' ORDER BY 1, 2")

    def test_pipeline_over_verified_tls(self):
        z = self.zetl()
        rc, out, _ = self.check(z)
        self.assertEqual(rc, 0, out)
        self.assertIn("ok       source: connected", out)
        self.assertIn("ok       warehouse: connected", out)
        self.assertEqual(z.run_once(env=self.env), 0, z.log())  # slots and publications
        groups = {t: slot_group(t, SLOT_GROUPS) for t in TENANTS}
        self.assertEqual(set(groups.values()), {0, 1}, groups)  # both streams carry rows
        z.start(env=self.env)
        deadline = time.time() + 30
        while self.sql(f"SELECT count(*) FILTER (WHERE active) FROM pg_replication_slots "
                       f"WHERE database = '{self.db}'") != [[str(SLOT_GROUPS)]]:
            self.assertLess(time.time(), deadline, "zetl did not connect:\n" + z.log())
            time.sleep(0.1)
        for k, t in enumerate(TENANTS):
            self.sql(f"INSERT INTO {t}.users SELECT g, '{t}' || g, g / 4.0 "
                     f"FROM generate_series({k * 100 + 1}, {k * 100 + 50}) g; "
                     f"UPDATE {t}.users SET score = -1 WHERE id % 7 = 0; "
                     f"DELETE FROM {t}.users WHERE id % 10 = 3")
        expect = sum(int(self.sql(f"SELECT count(*) FROM {t}.users")[0][0]) for t in TENANTS)
        deadline = time.time() + 60
        while True:
            got = self.whsql("SELECT count(*) FROM zetl_raw.users") if self.whsql(
                "SELECT to_regclass('zetl_raw.users') IS NOT NULL") == [["t"]] else [["0"]]
            if got == [[str(expect)]]:
                break
            self.assertLess(time.time(), deadline, f"{got} rows of {expect}:\n" + z.log())
            time.sleep(0.2)

        # While it runs, the servers see only encrypted zetl connections: on the source both
        # walsenders (replication=database keeps sslmode and sslrootcert), on the warehouse
        # the sink's.
        src = self.zetl_backends(self.src, self.db)
        walsenders = [r for r in src if r[0] == "walsender"]
        self.assertEqual(sorted(r[1] for r in walsenders),
                         [f"zetl zetl_{g}" for g in range(SLOT_GROUPS)], src)
        self.assertTrue(all(r[2] == "t" for r in src), src)
        wh = self.zetl_backends(self.wh, self.whdb)
        self.assertTrue(wh, "no zetl connection to the warehouse:\n" + z.log())
        self.assertTrue(all(r[2] == "t" for r in wh), wh)
        self.assertEqual(z.kill(signal.SIGTERM), 0, z.log())

        # The rows, compared in SQL independently of zetl.
        for t in TENANTS:
            src_rows = self.sql(f"SELECT id, email, score FROM {t}.users ORDER BY id")
            wh_rows = self.whsql(f"SELECT id, email, score FROM zetl_raw.users "
                                 f"WHERE tenant_id = '{t}' ORDER BY id")
            self.assertEqual(len(src_rows), 45, t)
            self.assertEqual(wh_rows, src_rows, t)
        rc, out, err = run_zetl(["verify", "--config", z.config], cwd=z.workdir, env=self.env)
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn(PASSWORD, out + err + z.log())

    def assert_refused(self, z, which, reason):
        """`zetl check` and `zetl run` refuse the connection `which` for `reason`."""
        rc, out, err = self.check(z)
        self.assertEqual(rc, 1, out + err)
        # One error, of the connection at fault; the other one is checked as usual.
        errors = [ln for ln in out.splitlines() if ln.startswith("error")]
        self.assertEqual(len(errors), 1, out)
        self.assertTrue(errors[0].startswith(f"error    {which}: could not connect: "), out)
        self.assertIn(reason, errors[0])
        other = "source" if which == "warehouse" else "warehouse"
        self.assertIn(f"ok       {other}: connected", out)

        rc = z.run_once(env=self.env, timeout=60)
        log = z.log()
        self.assertEqual(rc, 1, log)
        fatal = [ln for ln in log.splitlines() if "FATAL" in ln]
        self.assertTrue(fatal, log)
        self.assertIn("could not connect to the source database" if which == "source"
                      else "could not open the warehouse", fatal[0])
        self.assertIn(reason, fatal[0])
        # The hint names what to fix: the DSN's TLS settings, not host or password.
        self.assertEqual(len(fatal), 2, log)
        self.assertIn(f"check {which}.dsn", fatal[1])
        self.assertIn("sslrootcert", fatal[1])
        self.assertNotIn("password", fatal[1])
        self.assertNotIn(PASSWORD, log)
        self.assertEqual(self.slots(), [["0"]], "a slot was created before the refusal")
        return errors[0], fatal

    def test_wrong_ca_is_refused(self):
        src_bad = tls_dsn(self.src, self.db, self.wrong_ca.cert)
        wh_bad = tls_dsn(self.wh, self.whdb, self.wrong_ca.cert, host="localhost",
                         hostaddr="127.0.0.1")
        # The other server's CA is as wrong as a stranger's.
        wh_other = tls_dsn(self.wh, self.whdb, self.src_ca.cert)
        for case, which, dsns in (("src", "source", {"src_dsn": src_bad}),
                                  ("wh", "warehouse", {"wh_dsn": wh_bad}),
                                  ("wh_other", "warehouse", {"wh_dsn": wh_other})):
            with self.subTest(case=case):
                self.assert_refused(self.zetl(case=case, **dsns), which,
                                    "certificate verify failed")

    def test_host_name_not_in_certificate_is_refused(self):
        # The right CA and the right server, reached by a name its certificate is not for.
        src_bad = tls_dsn(self.src, self.db, self.src_ca.cert, host="db.other.test",
                          hostaddr="127.0.0.1")
        wh_bad = tls_dsn(self.wh, self.whdb, self.wh_ca.cert, host="wh.other.test",
                         hostaddr="127.0.0.1")
        for which, dsns, name in (("source", {"src_dsn": src_bad}, "db.other.test"),
                                  ("warehouse", {"wh_dsn": wh_bad}, "wh.other.test")):
            with self.subTest(which=which):
                self.assert_refused(self.zetl(case=which, **dsns), which,
                                    f'does not match host name "{name}"')


if __name__ == "__main__":
    main()
