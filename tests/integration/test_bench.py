"""zetl bench --config F: the benchmark harness against an existing server, small."""

import json
import os
import shutil
import tempfile
import unittest

from zetltest import Cluster, main, run_zetl


class BenchTest(unittest.TestCase):
    def test_bench_against_the_configured_source(self):
        pg = Cluster()
        work = tempfile.mkdtemp(prefix="zetl-test-")
        try:
            pg.psql("ALTER ROLE zetl CREATEDB")
            cfg = os.path.join(work, "zetl.yaml")
            with open(cfg, "w") as f:
                f.write(f'source:\n  dsn: "{pg.dsn()}"\n  tenants:\n    schemas: ["zetlbench_*"]\n'
                        f'archive:\n  url: file://{work}/archive\n')
            res = os.path.join(work, "results")
            rc, out, err = run_zetl(["bench", "--config", cfg, "insert-1m", "--rows", "20000",
                                     "--repeat", "1", "--no-e2e", "--no-lag", "--results", res],
                                    cwd=work, timeout=600)
            self.assertEqual(rc, 0, out + err)
            self.assertIn("| insert-1m |", out)
            self.assertNotIn(pg.dsn().split("password=")[1], out + err)
            with open(os.path.join(res, "insert-1m.json")) as f:
                result = json.load(f)
            # Every reader saw the same rows of the same WAL: pg_recvlogical's decoded
            # output and zetl's archive manifests.
            runs = result["runs"]
            self.assertIn("baseline", runs)
            self.assertIn("zetl", runs)
            rows = {r["rows"] for reader in runs.values() for r in reader}
            self.assertEqual(rows, {20000}, json.dumps(runs)[:2000])
            # The harness cleans up after itself on an existing server.
            left = pg.psql("SELECT count(*) FROM pg_replication_slots")
            self.assertEqual(left, [["0"]])
        finally:
            pg.destroy()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
