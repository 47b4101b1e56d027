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

    def test_kafka_workload_against_the_configured_source(self):
        """The kafka workload, tiny: on the same WAL, zetl archives (archive only) and
        publishes (a fresh kafka-mock, found next to the zetl binary, per run); every row
        is a message the broker holds and zetl's offsets records count, and the ratio of
        the two runs is reported."""
        pg = Cluster()
        work = tempfile.mkdtemp(prefix="zetl-test-")
        try:
            cfg = os.path.join(work, "zetl.yaml")
            with open(cfg, "w") as f:
                f.write(f'source:\n  dsn: "{pg.dsn()}"\n  tenants:\n    schemas: ["zetlbench_*"]\n'
                        f'archive:\n  url: file://{work}/archive\n')
            res = os.path.join(work, "results")
            rc, out, err = run_zetl(["bench", "--config", cfg, "kafka", "--rows", "20000",
                                     "--repeat", "1", "--results", res], cwd=work, timeout=600)
            self.assertEqual(rc, 0, out + err)
            self.assertIn("Kafka, zetl to build/kafka-mock against zetl to the archive only", out)
            self.assertIn("kafka targets: kafka ", out)
            with open(os.path.join(res, "kafka.json")) as f:
                result = json.load(f)
            runs = result["runs"]
            self.assertEqual([r["rows"] for r in runs["zetl"]], [20000])
            (k,) = runs["zetl_kafka"]
            # What the broker appended (high watermarks), what zetl's offsets records say it
            # published, and the offsets those records name: one message per inserted row.
            self.assertEqual(k["messages"], 20000, json.dumps(k)[:2000])
            self.assertEqual(k["offsets_rows"], 20000)
            self.assertEqual(k["offsets_position_messages"], 20000)
            self.assertGreaterEqual(k["offsets_records"], 1)
            self.assertTrue(k["rows_match"] and k["messages_match"])
            self.assertEqual(k["messages_by_topic"], {"zetl.users": 20000})
            self.assertGreater(k["avg_value_bytes"], k["avg_key_bytes"])
            self.assertGreater(k["peak_rss_mb"], 0)
            s = result["summary"]["kafka"]
            self.assertEqual(s["messages"], 20000)
            self.assertGreater(s["kafka_messages_per_s"], 0)
            self.assertGreater(s["archive_rows_per_s"], 0)
            self.assertGreater(s["ratio"], 0)
            self.assertEqual(len(s["ratio_per_rep"]), 1)
            self.assertAlmostEqual(s["ratio"], s["kafka_messages_per_s"] / s["archive_rows_per_s"],
                                   places=2)
            self.assertIn("kafka_ratio_met", result["targets"])
            # Nothing left behind on the source: slots, publications, tenant schemas.
            self.assertEqual(pg.psql("SELECT count(*) FROM pg_replication_slots"), [["0"]])
            self.assertEqual(pg.psql("SELECT count(*) FROM pg_publication"), [["0"]])
            self.assertEqual(pg.psql("SELECT count(*) FROM pg_namespace "
                                     "WHERE nspname LIKE 'zetlbench%'"), [["0"]])
        finally:
            pg.destroy()
            shutil.rmtree(work, ignore_errors=True)

    def test_snapshot_workloads_against_the_configured_source_and_warehouse(self):
        """The snapshot and new-tenant workloads, tiny, with the config's warehouse (a
        database of the same cluster): every reader got every row, the medians are of
        the repetitions, and nothing is left behind on either server."""
        pg = Cluster()
        work = tempfile.mkdtemp(prefix="zetl-test-")
        try:
            pg.psql("CREATE DATABASE wh OWNER zetl")
            cfg = os.path.join(work, "zetl.yaml")
            with open(cfg, "w") as f:
                f.write(f'source:\n  dsn: "{pg.dsn()}"\n  tenants:\n    schemas: ["zetlbench_*"]\n'
                        f'archive:\n  url: file://{work}/archive\n'
                        f'warehouse:\n  kind: postgres\n  dsn: "{pg.dsn("wh")}"\n'
                        f'  schema: unused\n')
            res = os.path.join(work, "results")
            rc, out, err = run_zetl(["bench", "--config", cfg, "snapshot", "new-tenant",
                                     "--rows", "3000", "--preload", "100", "--refresh-ms", "300",
                                     "--repeat", "2", "--results", res], cwd=work, timeout=600)
            self.assertEqual(rc, 0, out + err)
            self.assertNotIn(pg.dsn().split("password=")[1], out + err)
            self.assertIn("Initial snapshot, archive only (median of 2 run(s)", out)
            self.assertIn("New tenant while zetl runs (median of 2 run(s)", out)
            with open(os.path.join(res, "snapshot.json")) as f:
                snap = json.load(f)
            runs = snap["runs"]
            for reader in ("copy_workers", "copy_single", "zetl_snapshot", "zetl_e2e",
                           "bare_copy"):
                self.assertEqual([r["rows"] for r in runs[reader]], [3000, 3000], reader)
            self.assertEqual([r["verify"]["exit_code"] for r in runs["zetl_e2e"]], [0, 0])
            self.assertEqual([r["warehouse_rows"] for r in runs["zetl_e2e"]], [3000, 3000])
            s = snap["summary"]["snapshot"]
            self.assertTrue(s["rows_match"])
            self.assertEqual(s["median_of_runs"], 2)
            # The reported figure is the median (here: the mean of the two runs).
            rates = [r["rows_per_s"] for r in runs["zetl_snapshot"]]
            self.assertAlmostEqual(s["zetl_rows_per_s"], sum(rates) / 2, delta=1)
            with open(os.path.join(res, "new-tenant.json")) as f:
                nt = json.load(f)
            runs = nt["runs"]["zetl_new_tenant"]
            self.assertEqual([r["tenant"] for r in runs], ["zetlbench_new1", "zetlbench_new2"])
            self.assertEqual([r["rows"] for r in runs], [3000, 3000])
            self.assertTrue(all(r["seconds_to_warehouse"] > 0 for r in runs), runs)
            self.assertEqual(nt["summary"]["new_tenant"]["verify_exit_code"], 0)
            # Nothing left behind: slots, tenant schemas, warehouse schemas.
            self.assertEqual(pg.psql("SELECT count(*) FROM pg_replication_slots"), [["0"]])
            self.assertEqual(pg.psql("SELECT count(*) FROM pg_namespace "
                                     "WHERE nspname LIKE 'zetlbench%'"), [["0"]])
            self.assertEqual(pg.psql("SELECT count(*) FROM pg_namespace "
                                     "WHERE nspname LIKE 'zetlbench%'", db="wh"), [["0"]])
        finally:
            pg.destroy()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
