"""The Kafka test peers: build/kafka-mock and the fixtures of kafkatest.py,
checked with independent clients (kcat and python3-confluent-kafka for Kafka,
python3-avro for Avro) before the Kafka sink's tests rely on them.

Also pins what librdkafka 2.0.2's mock does not do (transaction markers, a
settable auto-create partition count), so an upgrade that changes it shows
up here first.
"""

import datetime
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

import avro.io
import avro.schema
import avro.timezones
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

import kafkatest as kt


def kcat(*args, stdin=None, timeout=30):
    p = subprocess.run(["kcat", *args], input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def http(method, url, body=None):
    """(status, decoded JSON reply) of one request to the registry double."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/vnd.schemaregistry.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def avro_body(schema_text, datum):
    """Avro binary encoding with python3-avro directly (not through kafkatest)."""
    buf = io.BytesIO()
    avro.io.DatumWriter(avro.schema.parse(schema_text)).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def admin_topics(bootstrap):
    """topic -> {partition: leader} from AdminClient, listing all topics (naming
    one in a Metadata request would create it on the mock)."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {t: {p: pm.leader for p, pm in tm.partitions.items()} for t, tm in md.topics.items()}


class KafkaMockTest(unittest.TestCase):
    def tearDown(self):
        kt.KafkaMock.stop_all()

    def test_one_broker_kcat_and_consume(self):
        with kt.KafkaMock() as km:
            print(f"bootstrap: {km.bootstrap}")
            self.assertRegex(km.bootstrap, r"^127\.0\.0\.1:\d+$")
            self.assertEqual(km.command("create-topic one 1"), "ok")
            # -Z: the empty value of k3 is sent as NULL, a tombstone.
            rc, _, err = kcat("-b", km.bootstrap, "-P", "-t", "one", "-K:", "-Z",
                              "-H", "source=kcat", stdin=b"k1:v1\nk2:v2\nk3:\n")
            self.assertEqual(rc, 0, err)

            rc, out, err = kcat("-b", km.bootstrap, "-C", "-t", "one", "-e", "-Z",
                                "-f", "%k=%s|%h|%o\n")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out.splitlines(), ["k1=v1|source=kcat|0", "k2=v2|source=kcat|1",
                                                "k3=NULL|source=kcat|2"])

            msgs = kt.consume(km.bootstrap, "one", timeout=15)
            self.assertEqual([(m.partition, m.offset, m.key, m.value, m.headers) for m in msgs], [
                (0, 0, b"k1", b"v1", {"source": b"kcat"}),
                (0, 1, b"k2", b"v2", {"source": b"kcat"}),
                (0, 2, b"k3", None, {"source": b"kcat"}),
            ])

            # A topic that kcat's producer auto-creates: 4 partitions, keys spread.
            lines = b"".join(b"key%d:value%d\n" % (i, i) for i in range(20))
            rc, _, err = kcat("-b", km.bootstrap, "-P", "-t", "auto", "-K:", stdin=lines)
            self.assertEqual(rc, 0, err)
            msgs = kt.consume(km.bootstrap, ["auto"], isolation="read_uncommitted", timeout=15)
            self.assertEqual(sorted((m.key, m.value) for m in msgs),
                             sorted((b"key%d" % i, b"value%d" % i) for i in range(20)))
            self.assertEqual(kt.topic_partitions(km.bootstrap, "auto"),
                             kt.MOCK_AUTO_CREATE_PARTITIONS)
            self.assertGreater(len({m.partition for m in msgs}), 1)
            self.assertEqual(km.stop(), 0)

    def test_three_brokers_control_commands(self):
        with kt.KafkaMock(brokers=3) as km:
            print(f"bootstrap: {km.bootstrap}")
            ports = [b.split(":")[1] for b in km.bootstrap.split(",")]
            self.assertEqual(len(set(ports)), 3)

            self.assertEqual(km.command("create-topic five 5"), "ok")
            self.assertEqual(len(admin_topics(km.bootstrap)["five"]), 5)
            rc, out, err = kcat("-b", km.bootstrap, "-L", "-J", "-t", "five")
            self.assertEqual(rc, 0, err)
            md = json.loads(out)
            self.assertEqual(len(md["brokers"]), 3)
            self.assertEqual(len(md["topics"][0]["partitions"]), 5)
            self.assertTrue(all(p["leader"] in (1, 2, 3) for p in md["topics"][0]["partitions"]))

            km.command("leader five 0 2")
            km.command("leader five 1 3")
            self.assertEqual(admin_topics(km.bootstrap)["five"][0], 2)

            for bad, why in [("create-topic five 5", "already exists"),
                             ("create-topic six 0", "bad partition count"),
                             ("broker-down 4", "bad broker id \"4\""),
                             ("push-errors Bogus 1", "unknown api key \"Bogus\""),
                             ("push-errors Produce NOPE", "unknown error code \"NOPE\""),
                             ("leader five 7 1", "Unknown topic or partition"),
                             ("frobnicate", "unknown command"),
                             ("", "empty command")]:
                with self.assertRaisesRegex(kt.KafkaMockError, re.escape(why)):
                    km.command(bad)
            # Every other command is accepted.
            for ok in ["ping", "rtt 1 5", "rtt all 0", "coordinator txn zetl-tx 2",
                       "coordinator group zetl-g 3", "push-errors EndTxn 51",
                       "clear-errors EndTxn", "broker-errors 2 Fetch NOT_LEADER_FOR_PARTITION@10",
                       "clear-errors 1", "push-errors 22 COORDINATOR_NOT_AVAILABLE",
                       "clear-errors InitProducerId", "follower five 2 -1"]:
                self.assertEqual(km.command(ok), "ok", ok)

            # An injected error reaches a client: not retriable, so the delivery fails.
            km.command("push-errors Produce TOPIC_AUTHORIZATION_FAILED")
            with self.assertRaisesRegex(AssertionError, "TOPIC_AUTHORIZATION_FAILED"):
                kt.produce(km.bootstrap, "five", [(b"k", b"refused")], partition=0)
            kt.produce(km.bootstrap, "five", [(b"k", b"p0")], partition=0)

            # The leader of partition 1 down: its messages wait, then time out.
            km.command("broker-down 3")
            with self.assertRaisesRegex(AssertionError, "MSG_TIMED_OUT"):
                kt.produce(km.bootstrap, "five", [(b"k", b"lost")], partition=1,
                           config={"message.timeout.ms": 1000})
            km.command("broker-up 3")
            kt.produce(km.bootstrap, "five", [(b"k", b"p1")], partition=1)

            msgs = kt.consume(km.bootstrap, "five", timeout=15)
            self.assertEqual([(m.partition, m.value) for m in msgs], [(0, b"p0"), (1, b"p1")])
            self.assertEqual(km.stop(), 0)

    def test_partitions_option_and_auto_create(self):
        with kt.KafkaMock(partitions=3, topics=["pre"]) as km:
            km.command("create-topic later")
            km.command("create-topic seven 7")
            kt.produce(km.bootstrap, "auto", [(None, b"x")])
            topics = admin_topics(km.bootstrap)
            self.assertEqual({t: len(p) for t, p in topics.items()},
                             {"pre": 3, "later": 3, "seven": 7,
                              "auto": kt.MOCK_AUTO_CREATE_PARTITIONS})

    def test_read_committed_sees_aborted_transactions(self):
        """librdkafka 2.0.2's mock writes no transaction markers: this pins that
        a read_committed reader also gets aborted and open transactions.  If
        this fails, the mock learned transactions: update kafka_mock.c's
        comment and let the sink's tests check isolation through a reader."""
        with kt.KafkaMock() as km:
            km.command("create-topic tx 1")
            p = Producer({"bootstrap.servers": km.bootstrap, "transactional.id": "kmock-test",
                          "logger": kt._quiet_logger()})
            p.init_transactions(10)
            for value, commit in [(b"committed-1", True), (b"aborted", False),
                                  (b"committed-2", True)]:
                p.begin_transaction()
                p.produce("tx", value=value)
                p.flush(10)
                if commit:
                    p.commit_transaction(10)
                else:
                    p.abort_transaction(10)
            p.begin_transaction()
            p.produce("tx", value=b"open")
            p.flush(10)
            msgs = kt.consume(km.bootstrap, "tx", isolation="read_committed", timeout=15)
            # Offsets without gaps: no control records between the transactions.
            self.assertEqual([(m.offset, m.value) for m in msgs],
                             [(0, b"committed-1"), (1, b"aborted"), (2, b"committed-2"),
                              (3, b"open")])
            p.abort_transaction(10)

    def test_stdin_eof_keeps_serving_signals_stop(self):
        km = kt.KafkaMock()
        km.close_stdin()
        time.sleep(0.3)
        self.assertTrue(km.alive(), km.log())
        rc, out, err = kcat("-b", km.bootstrap, "-L", "-J")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["brokers"][0]["name"], km.bootstrap)
        self.assertEqual(km.stop(), 0)
        self.assertIn("stopping on signal 15", km.log())
        km.destroy()

        km = kt.KafkaMock(brokers=3)
        os.kill(km.pid, signal.SIGINT)
        self.assertEqual(km.proc.wait(10), 0)
        km.destroy()

    def test_bad_usage(self):
        for args, why in [(["--brokers", "0"], '--brokers: "0"'),
                          (["--brokers", "x"], '--brokers: "x"'),
                          (["--partitions", "-1"], '--partitions: "-1"'),
                          (["--nope"], 'unknown option "--nope"'),
                          (["--brokers"], 'option "--brokers" needs a value'),
                          (["extra"], 'unexpected argument "extra"')]:
            p = subprocess.run([kt.KAFKA_MOCK_BIN, *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
            self.assertEqual(p.returncode, 2, args)
            self.assertEqual(p.stdout, b"", args)
            self.assertIn(why, p.stderr.decode(), args)
        p = subprocess.run([kt.KAFKA_MOCK_BIN, "--help"], stdout=subprocess.PIPE, timeout=10)
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"create-topic TOPIC", p.stdout)


USERS_V1 = json.dumps({
    "type": "record", "name": "users", "namespace": "zetl.tenant",
    "fields": [
        {"name": "tenant_id", "type": "string"},
        {"name": "id", "type": "long"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {"name": "synced_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ]})

USER = {"tenant_id": "tenant_a", "id": 42, "email": "a\u00e9@example.com",
        "synced_at": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=avro.timezones.utc)}


class AvroRegistryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.km = kt.KafkaMock()
        cls.registry = kt.SchemaRegistry()

    @classmethod
    def tearDownClass(cls):
        cls.registry.stop()
        cls.km.destroy()

    def roundtrip(self, topic, value):
        self.km.command(f"create-topic {topic} 1")
        kt.produce(self.km.bootstrap, topic, [(b"tenant_a:42", value)])
        msgs = kt.consume(self.km.bootstrap, topic, timeout=15)
        self.assertEqual(len(msgs), 1)
        return msgs[0].value

    def test_confluent_framing_through_registry(self):
        url = self.registry.url
        status, reply = http("POST", f"{url}/subjects/users-value/versions", {"schema": USERS_V1})
        self.assertEqual(status, 200, reply)
        sid = reply["id"]
        # The same schema again, and under another subject: the same global id.
        self.assertEqual(http("POST", f"{url}/subjects/users-value/versions",
                              {"schema": USERS_V1})[1], {"id": sid})
        self.assertEqual(http("POST", f"{url}/subjects/users2-value/versions",
                              {"schema": json.dumps(json.loads(USERS_V1), indent=2),
                               "schemaType": "AVRO"})[1], {"id": sid})
        self.assertEqual(http("GET", f"{url}/schemas/ids/{sid}"), (200, {"schema": USERS_V1}))
        self.assertEqual(http("GET", f"{url}/subjects/users-value/versions"), (200, [1]))
        self.assertEqual(http("GET", f"{url}/subjects/users-value/versions/latest")[1],
                         {"subject": "users-value", "version": 1, "id": sid, "schema": USERS_V1})
        self.assertEqual(http("GET", f"{url}/subjects/users-value/versions/1")[1]["id"], sid)
        self.assertIn("users-value", http("GET", f"{url}/subjects")[1])
        self.assertEqual(http("POST", f"{url}/subjects/users-value", {"schema": USERS_V1})[1]
                         ["version"], 1)

        frame = b"\x00" + sid.to_bytes(4, "big") + avro_body(USERS_V1, USER)
        value = self.roundtrip("users-confluent", frame)
        self.assertEqual(value, frame)
        self.assertEqual(kt.decode_confluent(value, url), (sid, USER))
        self.assertEqual(kt.decode_confluent(value, {sid: USERS_V1}), (sid, USER))
        self.assertEqual(kt.encode_confluent(USERS_V1, sid, USER), frame)

        with self.assertRaisesRegex(ValueError, "0x01"):
            kt.decode_confluent(b"\x01" + frame[1:], url)
        with self.assertRaisesRegex(ValueError, "left over"):
            kt.decode_confluent(frame + b"\x00", url)
        with self.assertRaisesRegex(ValueError, "too short"):
            kt.decode_confluent(frame[:4], url)

    def test_single_object_framing_with_fingerprint(self):
        fp = kt.fingerprint(USERS_V1)
        frame = b"\xc3\x01" + fp.to_bytes(8, "little") + avro_body(USERS_V1, USER)
        value = self.roundtrip("users-single", frame)
        table = kt.fingerprint_table([USERS_V1])
        self.assertEqual(kt.decode_single_object(value, table), (fp, USER))
        self.assertEqual(kt.encode_single_object(USERS_V1, USER), frame)
        with self.assertRaisesRegex(KeyError, "no schema with fingerprint"):
            kt.decode_single_object(value, {})
        with self.assertRaisesRegex(ValueError, "not c301"):
            kt.decode_single_object(b"\xc3\x02" + value[2:], table)

    def test_canonical_form_and_fingerprints(self):
        # From the Avro specification's test vectors (share/test/data/schema-tests.txt).
        vectors = [
            ('"null"', '"null"', 7195948357588979594),
            ('{"type":"int"}', '"int"', 8247732601305521295),
            ('"string"', '"string"', -8142146995180207161),
            ('[ "int" , {"type":"boolean"} ]', '["int","boolean"]', 5392556393470105090),
            ('{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
             '{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
            ('{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}',
             '{"name":"a.b.foo","type":"record","fields":[]}', -4616218487480524110),
            ('{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":"true"},'
             '{"order":"descending","name":"f2","doc":"Hello","type":"int"}],'
             '"type":"record", "name":"foo"}',
             '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},'
             '{"name":"f2","type":"int"}]}', -4860222112080293046),
            ('{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", '
             '"symbols":["A1", "A2"]}',
             '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245),
            ('{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}',
             '{"name":"x.y.z.foo","type":"fixed","size":32}', -3064184465700546786),
            ('{ "items":{"type":"null"}, "type":"array"}',
             '{"type":"array","items":"null"}', -589620603366471059),
            ('{ "values":"string", "type":"map"}',
             '{"type":"map","values":"string"}', -8732877298790414990),
            ('{"name":"PigValue","type":"record",'
             '"fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
             '{"name":"PigValue","type":"record","fields":[{"name":"value",'
             '"type":["null","int","long","PigValue"]}]}', -1759257747318642341),
        ]
        for text, canonical, fp in vectors:
            self.assertEqual(kt.canonical_form(text), canonical, text)
            self.assertEqual(kt.fingerprint_signed(text), fp, text)
            # python3-avro agrees where no logical type is involved.
            self.assertEqual(avro.schema.parse(text).canonical_form, canonical, text)
        self.assertEqual(kt.crc64_avro(b""), kt.CRC64_AVRO_EMPTY)
        # Logical types are stripped to the bare primitive (as Java does), and a
        # named type's second use is its full name.
        self.assertEqual(kt.canonical_form(USERS_V1),
                         '{"name":"zetl.tenant.users","type":"record","fields":['
                         '{"name":"tenant_id","type":"string"},{"name":"id","type":"long"},'
                         '{"name":"email","type":["null","string"]},'
                         '{"name":"synced_at","type":"long"}]}')
        nested = {"type": "record", "name": "r", "namespace": "ns", "fields": [
            {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["X"]}},
            {"name": "b", "type": "E"},
            {"name": "c", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10,
                                   "scale": 2}}]}
        self.assertEqual(kt.canonical_form(nested),
                         '{"name":"ns.r","type":"record","fields":[{"name":"a","type":'
                         '{"name":"ns.E","type":"enum","symbols":["X"]}},'
                         '{"name":"b","type":"ns.E"},{"name":"c","type":"bytes"}]}')

    def test_registry_compatibility_and_errors(self):
        url = self.registry.url
        v1 = {"type": "record", "name": "orders", "fields": [
            {"name": "id", "type": "long"}, {"name": "amount", "type": "double"}]}

        def with_fields(*extra, drop=()):
            s = json.loads(json.dumps(v1))
            s["fields"] = [f for f in s["fields"] if f["name"] not in drop] + list(extra)
            return json.dumps(s)

        def register(schema, subject="orders-value"):
            return http("POST", f"{url}/subjects/{subject}/versions", {"schema": schema})

        status, r1 = register(json.dumps(v1))
        self.assertEqual(status, 200, r1)
        # A field added with a default: a reader of v2 reads v1 data.
        status, r2 = register(with_fields({"name": "note", "type": "string", "default": ""}))
        self.assertEqual(status, 200, r2)
        self.assertNotEqual(r2["id"], r1["id"])
        self.assertEqual(http("GET", f"{url}/subjects/orders-value/versions"), (200, [1, 2]))

        no_default = with_fields({"name": "note", "type": "string", "default": ""},
                                 {"name": "qty", "type": "int"})
        retyped = json.dumps({"type": "record", "name": "orders", "fields": [
            {"name": "id", "type": "long"}, {"name": "amount", "type": "string"},
            {"name": "note", "type": "string", "default": ""}]})
        for bad in (no_default, retyped):
            status, reply = register(bad)
            self.assertEqual(status, 409, reply)
            self.assertEqual(reply["error_code"], 409)
            self.assertIn('Schema being registered is incompatible with an earlier schema for '
                          'subject "orders-value"', reply["message"])
            self.assertEqual(http("POST", f"{url}/compatibility/subjects/orders-value/versions/"
                                  "latest", {"schema": bad}), (200, {"is_compatible": False}))
        self.assertEqual(http("GET", f"{url}/subjects/orders-value/versions"), (200, [1, 2]))
        # A removed field is fine: the reader ignores it.
        dropped = with_fields({"name": "note", "type": "string", "default": ""},
                              drop=("amount",))
        self.assertEqual(http("POST", f"{url}/compatibility/subjects/orders-value/versions/latest",
                              {"schema": dropped}), (200, {"is_compatible": True}))
        status, r3 = register(dropped)
        self.assertEqual((status, r3["id"]), (200, r2["id"] + 1))

        # Errors as the real registry words them.
        self.assertEqual(http("GET", f"{url}/subjects/nope/versions"),
                         (404, {"error_code": 40401, "message": "Subject 'nope' not found."}))
        self.assertEqual(http("GET", f"{url}/schemas/ids/999"),
                         (404, {"error_code": 40403, "message": "Schema 999 not found"}))
        self.assertEqual(http("GET", f"{url}/subjects/orders-value/versions/9")[1]["error_code"],
                         40402)
        status, reply = register('{"type": "record", "name": "x"}')
        self.assertEqual((status, reply["error_code"]), (422, 42201))

        # Refusals for error tests: one subject, for a number of requests.
        self.registry.refuse("orders-value", 50001, "Error in the backend datastore", times=2)
        for _ in range(2):
            self.assertEqual(register(json.dumps(v1)), (500, {
                "error_code": 50001, "message": "Error in the backend datastore"}))
        self.assertEqual(register(json.dumps(v1)), (200, {"id": r1["id"]}))
        self.registry.refuse("orders-value", 40301, "User is denied operation Write")
        self.assertEqual(register(json.dumps(v1))[0], 403)
        self.assertEqual(register(json.dumps(v1), "other-value")[0], 200)
        self.registry.allow("orders-value")
        self.assertEqual(register(json.dumps(v1))[0], 200)

        statuses = [r.status for r in self.registry.requests_for("POST", "/subjects/orders-value")]
        self.assertEqual(statuses.count(409), 2)
        self.assertEqual(statuses.count(500), 2)
        self.assertEqual(statuses.count(403), 1)
        self.assertTrue(all(isinstance(r.body, dict) for r in self.registry.requests
                            if r.method == "POST"))

        # NONE takes anything.
        self.registry.set_compatibility("NONE", "orders-value")
        self.assertEqual(register(no_default)[0], 200)


if __name__ == "__main__":
    if not os.path.exists(kt.KAFKA_MOCK_BIN):
        print(f"kafka-mock not found at {kt.KAFKA_MOCK_BIN}", file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)
