#!/usr/bin/python3
"""
Independent check of proto/event*.c, run by tests/unit/test_proto_event.c:
python3-avro (Debian's; /usr/bin/python3) reads the messages the C encoder
wrote, with the schema JSON the C code wrote, and the values must be the
inputs.  Also: each schema's canonical form (python3-avro's) and its
CRC-64-AVRO fingerprint (the specification's algorithm, below) equal the C
ones; the framing carries that fingerprint or the schema id; python3-avro's
own encoding of the expected datum is the same bytes; the JSON form holds
the same values.

Usage: event_check.py CASES.json   (written by the C test; exit 0 when all pass)
"""
import base64
import io
import json
import math
import struct
import sys

try:
    import avro.io
    import avro.schema
except ImportError:
    print("event_check.py: python3-avro is not installed (apt-get install python3-avro)",
          file=sys.stderr)
    sys.exit(2)

EMPTY = 0xC15D213AA4D7A795
TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (EMPTY & -(_fp & 1))
    TABLE.append(_fp)


def crc64_avro(data):
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ b) & 0xFF]
    return fp


failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def avro_value(avro_type, text):
    """A column's PostgreSQL text as the Avro datum its type holds."""
    if avro_type == "boolean":
        assert text in ("t", "f"), text
        return text == "t"
    if avro_type in ("int", "long"):
        return int(text)
    if avro_type == "float":
        return f32(float(text))
    if avro_type == "double":
        return float(text)
    if avro_type == "bytes":
        assert text.startswith("\\x"), text
        return bytes.fromhex(text[2:])
    return text


def json_value(avro_type, text):
    """The same as the JSON form writes it (floats compared after the reader's rounding)."""
    v = avro_value(avro_type, text)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def value_fields(env):
    return env["fields"][0]["type"][1]["fields"]


def expected(case, env, change, form):
    """The envelope a reader should see for one change: 'avro' or 'json' form."""
    vf = value_fields(env)
    cols = case["columns"]
    names = [f["name"] if form == "avro" else f["pg.name"] for f in vf]
    types = [f["type"] if isinstance(f["type"], str) else f["type"][1] for f in vf]
    conv = avro_value if form == "avro" else json_value

    def image(vals, unchanged):
        if vals is None:
            return None
        rec = {names[0]: change["tenant"]}
        for i, text in enumerate(vals):
            if text is None or unchanged[i]:
                rec[names[i + 1]] = None
            else:
                rec[names[i + 1]] = conv(types[i + 1], text)
        return rec

    # Field names: the source's name in pg.name, always.
    for i, c in enumerate(cols):
        check(vf[i + 1]["pg.name"] == c["name"] and vf[i + 1]["pg.type"] == c["type"]
              and vf[i + 1]["pg.key"] == c["key"], "pg.* of column %r" % c["name"])
    src = change["source"]
    return {
        # Unchanged TOAST values are flagged in the new tuple (after) only.
        "before": image(change["before"], [False] * len(cols)),
        "after": image(change["after"], change["unchanged"]),
        "source": {
            "version": src["version"], "connector": "zetl", "name": src["name"],
            "ts_ms": src["ts_ms"], "snapshot": "true" if src["snapshot"] else "false",
            "db": src["db"], "sequence": '[null,"%d"]' % src["lsn"], "schema": src["schema"],
            "table": src["table"], "txId": None if src["txid"] < 0 else src["txid"],
            "lsn": src["lsn"], "xmin": None, "tenant": change["tenant"], "seq": src["seq"],
        },
        "op": change["op"],
        "ts_ms": change["ts_ms"],
        "unchanged": [names[i + 1] for i, u in enumerate(change["unchanged"]) if u],
    }


def expected_key(case, key_env, change, form):
    vals = change["after"] if change["after"] is not None else change["before"]
    fields = key_env["fields"]
    rec = {(fields[0]["name"] if form == "avro" else fields[0]["pg.name"]): change["tenant"]}
    conv = avro_value if form == "avro" else json_value
    k = 1
    for i, c in enumerate(case["columns"]):
        if c["key"]:
            f = fields[k]
            check(f["pg.name"] == c["name"], "key field %d pg.name" % k)
            rec[f["name"] if form == "avro" else f["pg.name"]] = conv(f["type"], vals[i])
            k += 1
    check(k == len(fields), "key fields")
    return rec


def json_floats_as_read(case, env, got):
    """JSON numbers of float4 columns read as doubles; round them as a float reader would."""
    for img in ("before", "after"):
        if got.get(img) is None:
            continue
        for f in value_fields(env)[1:]:
            v = got[img].get(f["pg.name"])
            if f["type"][1] == "float" and isinstance(v, (int, float)):
                got[img][f["pg.name"]] = f32(float(v))
            elif f["type"][1] == "double" and isinstance(v, int):
                got[img][f["pg.name"]] = float(v)
    return got


def read_avro(schema, frame, fp, data):
    """Removes the framing (checked) and decodes the body; all bytes must be used."""
    if frame["schema_id"] >= 0:
        check(data[0] == 0 and struct.unpack(">i", data[1:5])[0] == frame["schema_id"],
              "confluent framing")
        body = data[5:]
    else:
        check(data[:2] == b"\xc3\x01" and struct.unpack("<Q", data[2:10])[0] == fp,
              "single-object framing carries the fingerprint")
        body = data[10:]
    bio = io.BytesIO(body)
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(bio))
    check(bio.tell() == len(body), "bytes left over after the datum")
    return datum, body


def encode_avro(schema, datum):
    bio = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(bio))
    return bio.getvalue()


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        case = json.load(f)
    key_schema = avro.schema.parse(case["key_schema"])
    value_schema = avro.schema.parse(case["value_schema"])
    key_env = json.loads(case["key_schema"])
    env = json.loads(case["value_schema"])
    check(key_schema.canonical_form == case["key_canonical"], "key canonical form")
    check(value_schema.canonical_form == case["value_canonical"], "value canonical form")
    key_fp = crc64_avro(key_schema.canonical_form.encode())
    value_fp = crc64_avro(value_schema.canonical_form.encode())
    check("%016x" % key_fp == case["key_fp"], "key fingerprint")
    check("%016x" % value_fp == case["value_fp"], "value fingerprint")
    check(env["pg.table"] and env["zetl.tenant_column"] == case["tenant_column"],
          "record properties")

    n = 0
    for m in case["messages"]:
        change = m["change"]
        where = "message %d (%s, op %s)" % (n, m["format"], change["op"])
        n += 1
        value = bytes.fromhex(m["value"])
        if m["format"] == "avro":
            want = expected(case, env, change, "avro")
            got, body = read_avro(value_schema, m, value_fp, value)
            check(same(got, want), "%s: value\n  got  %r\n  want %r" % (where, got, want))
            check(encode_avro(value_schema, want) == body, "%s: python3-avro's bytes" % where)
            if "key" in m:
                kwant = expected_key(case, key_env, change, "avro")
                kgot, kbody = read_avro(key_schema, m, key_fp, bytes.fromhex(m["key"]))
                check(same(kgot, kwant), "%s: key\n  got  %r\n  want %r" % (where, kgot, kwant))
                check(encode_avro(key_schema, kwant) == kbody, "%s: key bytes" % where)
        else:
            want = expected(case, env, change, "json")
            got = json_floats_as_read(case, env, json.loads(value.decode("utf-8")))
            for img in ("before", "after"):
                if want[img] is not None:
                    for f in value_fields(env)[1:]:
                        if f["type"][1] == "float" and isinstance(want[img][f["pg.name"]], float):
                            want[img][f["pg.name"]] = f32(want[img][f["pg.name"]])
            check(same(got, want), "%s: value\n  got  %r\n  want %r" % (where, got, want))
            if "key" in m:
                kwant = expected_key(case, key_env, change, "json")
                kgot = json.loads(bytes.fromhex(m["key"]).decode("utf-8"))
                check(same(kgot, kwant), "%s: key\n  got  %r\n  want %r" % (where, kgot, kwant))
    check(n > 0, "no messages")
    for f in failures:
        print("event_check.py: " + f, file=sys.stderr)
    print("event_check.py: %d messages, %d failures" % (n, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
