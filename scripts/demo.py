#!/usr/bin/env python3
"""make demo: zetl's main job on an embedded default.

Starts a throwaway source and warehouse PostgreSQL on loopback, creates three
tenant schemas with `users` and `orders`, runs zetl as a daemon, loads a few
thousand rows and makes live changes (insert, update, delete, a TRUNCATE in
one tenant), then prints the warehouse's unioned `users` table, per-tenant
counts, the measured commit-to-warehouse lag, the change events published to
Kafka (build/kafka-mock, librdkafka's mock cluster) and the `zetl verify`
result.
Everything it started is stopped and removed at the end.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import zetltest  # noqa: E402
from zetltest import Cluster, Zetl  # noqa: E402
from kafkatest import (KafkaMock, consume, decode_single_object, fingerprint_table,  # noqa: E402
                       list_topics)

TENANTS = ["tenant_acme", "tenant_globex", "tenant_initech"]
STATUSES = ["active", "active", "active", "suspended", "closed"]
TIERS = ["free", "free", "pro", "team", "enterprise"]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
        "Perlman", "Lamport"]


def ddl(schema):
    return f"""
CREATE SCHEMA {schema};
CREATE TABLE {schema}.users (
  user_id bigint PRIMARY KEY, email text NOT NULL, first_name text, last_name text,
  registration_date date, last_login_date timestamptz, account_status text,
  subscription_tier text, created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
CREATE TABLE {schema}.orders (
  order_id bigint PRIMARY KEY, user_id bigint, amount numeric(12,2), currency char(3),
  status text, ordered_at timestamptz DEFAULT now());
"""


def load(rng, schema, n_users, n_orders):
    rows = []
    for i in range(1, n_users + 1):
        f, l_ = rng.choice(FIRST), rng.choice(LAST)
        rows.append(f"({i}, '{f.lower()}.{l_.lower()}{i}@{schema[7:]}.example', '{f}', '{l_}', "
                    f"date '2023-01-01' + {rng.randrange(700)}, now() - interval '{rng.randrange(90)} days', "
                    f"'{rng.choice(STATUSES)}', '{rng.choice(TIERS)}')")
    sql = (f"INSERT INTO {schema}.users (user_id, email, first_name, last_name, registration_date, "
           f"last_login_date, account_status, subscription_tier) VALUES " + ",\n".join(rows) + ";\n")
    orders = [f"({i}, {rng.randrange(1, n_users + 1)}, {rng.randrange(100, 100000) / 100:.2f}, "
              f"'{rng.choice(['USD', 'EUR', 'GBP'])}', '{rng.choice(['paid', 'shipped', 'refunded'])}')"
              for i in range(1, n_orders + 1)]
    sql += (f"INSERT INTO {schema}.orders (order_id, user_id, amount, currency, status) VALUES "
            + ",\n".join(orders) + ";\n")
    return sql


def section(title):
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def main():
    zetl_bin = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/zetl")
    zetltest.ZETL_BIN = zetl_bin
    rng = random.Random(42)
    work = tempfile.mkdtemp(prefix="zetl-demo-")
    src = wh = None
    z = None
    rc = 1
    try:
        section("starting throwaway PostgreSQL clusters on loopback")
        src = Cluster()
        wh = Cluster(wal_level="replica")
        src.createdb("app")
        wh.createdb("wh")
        print(f"source    127.0.0.1:{src.port} (database app)")
        print(f"warehouse 127.0.0.1:{wh.port} (database wh)")
        src.psql("".join(ddl(t) for t in TENANTS), db="app")
        print(f"tenants   {', '.join(TENANTS)} (users, orders)")

        section("starting build/kafka-mock (librdkafka's mock cluster) on loopback")
        kafka = KafkaMock(brokers=1, binary=os.path.join(os.path.dirname(zetl_bin), "kafka-mock"))
        print(f"kafka     {kafka.bootstrap} (topics demo.<table>)")

        cfg = f"""source:
  tenants:
    schemas: ["tenant_*"]
  slot: zetl_demo
transforms:
  tenant_column: tenant_id
  clean:
    - columns: ["users.email"]
      trim: true
      lower: true
buffer:
  dir: ./zetl-data
  max_age_ms: 200
archive:
  url: file://./zetl-data/archive
warehouse:
  kind: postgres
  schema: analytics
kafka:
  brokers: "{kafka.bootstrap}"
  topic_prefix: demo
"""
        env = {"ZETL_SOURCE_DSN": src.dsn("app"), "ZETL_WAREHOUSE_DSN": wh.dsn("wh"),
               "ZETL_LOG_LEVEL": "log"}
        z = Zetl(work, cfg)
        section("zetl check")
        p = subprocess.run([zetl_bin, "check", "--config", z.config], cwd=work,
                           env={**os.environ, **env})
        if p.returncode != 0:
            raise SystemExit("zetl check found a blocking problem")

        section("zetl run (daemon)")
        z.start(env=env)
        deadline = time.time() + 30
        while not src.psql("SELECT 1 FROM pg_replication_slots WHERE active", db="app"):
            if time.time() > deadline or z.proc.poll() is not None:
                raise SystemExit("zetl did not start:\n" + z.log())
            time.sleep(0.1)
        print(f"zetl pid {z.proc.pid} is streaming; log: {z.stderr_path}")

        section("loading rows")
        sizes = {"tenant_acme": (1500, 3000), "tenant_globex": (1000, 2500),
                 "tenant_initech": (500, 1200)}
        for t in TENANTS:
            src.psql(load(rng, t, *sizes[t]), db="app")
            print(f"{t:16} {sizes[t][0]:5} users, {sizes[t][1]:5} orders")

        section("live changes")
        src.psql("""
INSERT INTO tenant_acme.users (user_id, email, first_name, last_name, account_status, subscription_tier)
  VALUES (5001, '  New.User@ACME.example ', 'New', 'User', 'active', 'pro');
UPDATE tenant_globex.users SET subscription_tier = 'enterprise', updated_at = now() WHERE user_id <= 10;
DELETE FROM tenant_initech.orders WHERE status = 'refunded';
BEGIN;
UPDATE tenant_acme.users SET account_status = 'closed' WHERE user_id = 1;
DELETE FROM tenant_acme.users WHERE user_id = 2;
COMMIT;
TRUNCATE tenant_initech.orders;
""", db="app")
        print("insert (acme), update 10 rows (globex), delete refunded orders (initech),")
        print("a transaction with an update and a delete (acme), TRUNCATE tenant_initech.orders")

        section("commit-to-warehouse lag")
        lags = []
        for i in range(10):
            uid = 9000 + i
            t0 = time.time()
            src.psql(f"INSERT INTO tenant_globex.users (user_id, email) VALUES ({uid}, 'lag{i}@x')",
                     db="app")
            while not wh.psql(f"SELECT 1 FROM analytics.users WHERE tenant_id = 'tenant_globex' "
                              f"AND user_id = {uid}", db="wh", check=False):
                if time.time() - t0 > 60:
                    raise SystemExit("row did not reach the warehouse within 60 s:\n" + z.log())
                time.sleep(0.01)
            lags.append(time.time() - t0)
        lags.sort()
        print(f"10 single-row commits: min {lags[0]*1000:.0f} ms, median "
              f"{lags[5]*1000:.0f} ms, max {lags[-1]*1000:.0f} ms")

        section("warehouse: analytics.users, first rows per tenant")
        p = subprocess.run(
            ["psql", "-X", "-h", "127.0.0.1", "-p", str(wh.port), "-U", "postgres", "-d", "wh",
             "-c", "SELECT tenant_id, user_id, email, first_name, last_name, account_status, "
                   "subscription_tier FROM (SELECT *, row_number() OVER (PARTITION BY tenant_id "
                   "ORDER BY user_id) AS n FROM analytics.users) u WHERE n <= 3 "
                   "ORDER BY tenant_id, user_id",
             "-c", "SELECT tenant_id, (SELECT count(*) FROM analytics.users u WHERE "
                   "u.tenant_id = t.tenant_id) AS users, (SELECT count(*) FROM analytics.orders o "
                   "WHERE o.tenant_id = t.tenant_id) AS orders FROM (SELECT DISTINCT tenant_id "
                   "FROM analytics.users) t ORDER BY 1"],
            env={**os.environ})
        section("kafka: change events (Debezium envelope, Avro single-object encoding)")
        records = [json.loads(m.value) for m in consume(
            kafka.bootstrap, [t for t in list_topics(kafka.bootstrap)
                              if t.startswith("demo._zetl_offsets.")])]
        per_topic = {}
        for r in records:
            for topic, parts in r["positions"].items():
                n = sum(hi - lo + 1 for lo, hi in parts.values())
                per_topic[topic] = per_topic.get(topic, 0) + n
        for topic in sorted(t for t in per_topic if not t.startswith("demo._zetl")):
            print(f"{topic:14} {per_topic[topic]:6} messages")
        schemas = fingerprint_table([m.value.decode()
                                     for m in consume(kafka.bootstrap, "demo._zetl_schemas")])
        for m in consume(kafka.bootstrap, "demo.users"):
            if m.value is None:
                continue
            _, ev = decode_single_object(m.value, schemas)
            if ev["op"] == "c" and ev["after"]["user_id"] == 5001:
                shown = {"op": ev["op"], "after": {k: ev["after"][k] for k in
                                                    ("tenant_id", "user_id", "email")},
                         "source": {k: ev["source"][k] for k in
                                    ("connector", "name", "schema", "table", "lsn")}}
                print("the live insert:", json.dumps(shown))

        section("zetl verify")
        p = subprocess.run([zetl_bin, "verify", "--config", z.config], cwd=work,
                           env={**os.environ, **env})
        rc = p.returncode
    finally:
        if z is not None and z.proc is not None and z.proc.poll() is None:
            z.proc.send_signal(signal.SIGTERM)
            code = z.wait(60)
            section("zetl stopped")
            print(f"exit status {code}, peak RSS {z.maxrss_kb / 1024:.1f} MiB")
        for c in (src, wh):
            if c is not None:
                c.destroy()
        KafkaMock.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        print("\nremoved the clusters and the work directory")
    sys.exit(rc)


if __name__ == "__main__":
    main()
