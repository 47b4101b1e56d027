"""Exactly-once apply (DESIGN invariant 1), checked on hand-made batches:

- a batch at exactly the stored offset is skipped and leaves `_zetl_offsets`
  untouched;
- a replayed batch that overlaps what the warehouse already holds (other batch
  boundaries than the first time, as after a crash) applies only the new
  transactions;
- a data file whose bytes differ from the manifest's sha256 is refused even
  when it is a valid zstd frame with a correct zstd checksum.

Batches are real captures (`zetl run --once`, archive only), taken apart and
put together again with the zstd CLI, as a replay tool would."""

import hashlib
import json
import os
import shutil
import subprocess

from test_warehouse import WarehouseBase, load_json
from zetltest import main, parse_csv


def zstd_text(path):
    return subprocess.run(["zstd", "-q", "-dc", path], check=True,
                          stdout=subprocess.PIPE).stdout.decode("utf-8")


def zstd_compress(text, level=1):
    return subprocess.run(["zstd", "-q", "-c", f"-{level}"], input=text.encode("utf-8"),
                          check=True, stdout=subprocess.PIPE).stdout


def write_manifest(bdir, man):
    with open(os.path.join(bdir, "manifest.json"), "w") as f:
        f.write(json.dumps(man, indent=2) + "\n")


def merge_batches(dirs, out_root):
    """One batch directory covering the consecutive batches `dirs` of one stream: per
    table (and column shape) the CSV files concatenated and recompressed, the manifest's
    range from the first batch's first LSN to the last batch's last and end LSN, with
    the counts, sizes and sha256 of the new files."""
    mans = [load_json(os.path.join(d, "manifest.json")) for d in dirs]
    first, last = mans[0], mans[-1]
    assert len({m["stream"] for m in mans}) == 1
    name = "%016X-%016X" % (first["first_lsn_int"], last["last_lsn_int"])
    bdir = os.path.join(out_root, first["stream"], name)
    os.makedirs(bdir)
    groups = []  # [file entry, [texts]] per (table, columns), in order of first appearance
    for d, m in zip(dirs, mans):
        for fi in m["files"]:
            for g in groups:
                if g[0]["table"] == fi["table"] and g[0]["columns"] == fi["columns"]:
                    break
            else:
                g = [dict(fi, rows=0, tenants=[]), []]
                assert fi["file"] not in {x[0]["file"] for x in groups}, fi["file"]
                groups.append(g)
            g[1].append(zstd_text(os.path.join(d, fi["file"])))
            g[0]["rows"] += fi["rows"]
            g[0]["tenants"] += [t for t in fi["tenants"] if t not in g[0]["tenants"]]
    files = []
    for entry, texts in groups:
        data = zstd_compress("".join(texts))
        with open(os.path.join(bdir, entry["file"]), "wb") as f:
            f.write(data)
        entry["bytes"] = len(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        assert len(parse_csv("".join(texts))) == entry["rows"]
        files.append(entry)
    man = dict(last)
    for k in ("first_lsn", "first_lsn_int", "first_commit_time"):
        man[k] = first[k]
    for k in ("transactions", "rows", "raw_bytes"):
        man[k] = sum(m[k] for m in mans)
    man["files"] = files
    write_manifest(bdir, man)
    return bdir


class ExactlyOnceTest(WarehouseBase):
    def offsets(self):
        return self.wh(f"SELECT stream, last_lsn, end_lsn, batch, applied_at::text "
                       f"FROM {self.schema}._zetl_offsets ORDER BY stream")

    def test_batch_at_offset_skipped_overlap_applies_only_new(self):
        # History mode and a keyless table: applying any transaction twice shows (a
        # second version with the same _zetl_valid_from fails the primary key, an appended
        # row appears twice).
        self.sql("""
CREATE SCHEMA tenant_a;
CREATE TABLE tenant_a.users (id int PRIMARY KEY, name text);
CREATE TABLE tenant_a.log (msg text);
""")
        self.setup_zetl(deletes="history", schema="zetl_hist")
        # Batch A: a single transaction (first_lsn == last_lsn).
        self.sql("BEGIN; INSERT INTO tenant_a.users VALUES (1, 'v1'), (2, 'x1'); "
                 "INSERT INTO tenant_a.log VALUES ('a'); COMMIT;")
        self.capture()
        (a,) = self.batch_dirs()
        self.apply(a)
        before = self.offsets()
        man_a = load_json(os.path.join(a, "manifest.json"))
        self.assertEqual(before, [[man_a["stream"], str(man_a["last_lsn_int"]),
                                   str(man_a["end_lsn_int"]), os.path.basename(a), before[0][4]]])
        rows_a = self.wh("SELECT u::text FROM zetl_hist.users u ORDER BY 1")
        log_a = self.wh("SELECT msg, _zetl_valid_from FROM zetl_hist.log ORDER BY 1")

        # The batch at exactly the stored offset: skipped, offsets row untouched.
        self.apply(a)
        self.assertEqual(self.offsets(), before)
        self.assertEqual(self.wh("SELECT u::text FROM zetl_hist.users u ORDER BY 1"), rows_a)
        self.assertEqual(self.wh("SELECT msg, _zetl_valid_from FROM zetl_hist.log ORDER BY 1"),
                         log_a)

        # Batch B (not applied): two more transactions.
        self.sql("""
BEGIN; UPDATE tenant_a.users SET name = 'v2' WHERE id = 1; INSERT INTO tenant_a.log VALUES ('b');
COMMIT;
DELETE FROM tenant_a.users WHERE id = 2;
""")
        self.capture()
        a2, b = self.batch_dirs()
        self.assertEqual(a2, a)
        # A replay with other boundaries: one batch covering A (applied) and B (new).
        ab = merge_batches([a, b], os.path.join(self.work, "replay"))
        man_ab = load_json(os.path.join(ab, "manifest.json"))
        man_b = load_json(os.path.join(b, "manifest.json"))
        self.assertEqual((man_ab["first_lsn_int"], man_ab["last_lsn_int"], man_ab["transactions"]),
                         (man_a["first_lsn_int"], man_b["last_lsn_int"], 3))
        self.apply(ab)
        lsn_a = str(man_a["last_lsn_int"])
        lsn_b1, lsn_b2 = sorted({r[0] for r in self.wh(
            "SELECT _zetl_lsn FROM zetl_hist.users WHERE _zetl_lsn > " + lsn_a + " UNION "
            "SELECT _zetl_valid_to FROM zetl_hist.users WHERE _zetl_valid_to IS NOT NULL")})
        self.assertEqual(lsn_b2, str(man_b["last_lsn_int"]))
        self.assertEqual(self.wh("SELECT id, name, _zetl_valid_from, _zetl_valid_to "
                                 "FROM zetl_hist.users ORDER BY id, _zetl_valid_from"),
                         [["1", "v1", lsn_a, lsn_b1], ["1", "v2", lsn_b1, None],
                          ["2", "x1", lsn_a, lsn_b2]])
        self.assertEqual(self.wh("SELECT msg, _zetl_valid_from FROM zetl_hist.log ORDER BY 1"),
                         [["a", lsn_a], ["b", lsn_b1]])
        after = self.offsets()
        self.assertEqual([r[:4] for r in after],
                         [[man_b["stream"], str(man_b["last_lsn_int"]),
                           str(man_b["end_lsn_int"]), os.path.basename(ab)]])
        # B itself now ends at the offset: skipped, nothing changes.
        snap = self.wh("SELECT u::text FROM zetl_hist.users u ORDER BY 1")
        self.apply(b)
        self.apply(ab)
        self.assertEqual(self.offsets(), after)
        self.assertEqual(self.wh("SELECT u::text FROM zetl_hist.users u ORDER BY 1"), snap)
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_hist.log"), [["2"]])

    def test_file_with_valid_zstd_but_wrong_sha256_is_refused(self):
        self.sql("""
CREATE SCHEMA tenant_a;
CREATE TABLE tenant_a.users (id int PRIMARY KEY, email text, name text, score numeric(10,2));
""")
        self.setup_zetl()
        self.sql("INSERT INTO tenant_a.users SELECT i, 'e' || i, 'n' || i, i FROM "
                 "generate_series(1, 50) i")
        self.sync()
        self.sql("""
UPDATE tenant_a.users SET name = 'changed-' || id, score = score * 3 WHERE id % 5 = 0;
DELETE FROM tenant_a.users WHERE id % 7 = 0;
INSERT INTO tenant_a.users VALUES (51, 'e51', 'new', 51);
""")
        self.capture()
        good = self.batch_dirs()[-1]
        bad = os.path.join(self.work, "bad", os.path.basename(good))
        shutil.copytree(good, bad)
        man = load_json(os.path.join(bad, "manifest.json"))
        (fi,) = [f for f in man["files"] if f["table"] == "users"]
        path = os.path.join(bad, fi["file"])
        size = os.path.getsize(path)
        # Change one character of an updated row's values and recompress, until the new
        # file has the manifest's byte size: only the sha256 tells it apart.
        text = zstd_text(path)
        lines = text.split("\n")
        data = None
        for li, line in enumerate(lines):
            if not line.startswith("U,"):
                continue
            start = len(",".join(line.split(",")[:6])) + 1  # after the meta and tenant columns
            for pos in range(start, len(line)):
                for ch in "13579qxz":
                    if line[pos] in ",." or ch == line[pos]:
                        continue
                    t2 = "\n".join(lines[:li] + [line[:pos] + ch + line[pos + 1:]] + lines[li + 1:])
                    for level in (1, 2, 3):
                        c = zstd_compress(t2, level)
                        if len(c) == size:
                            data = c
                            break
                    if data:
                        break
                if data:
                    break
            if data:
                break
        self.assertIsNotNone(data, "no same-size alteration found")
        with open(path, "wb") as f:
            f.write(data)
        # zstd itself finds nothing wrong; the manifest's size matches, its sha256 does not.
        subprocess.run(["zstd", "-q", "-t", path], check=True)
        self.assertEqual(os.path.getsize(path), fi["bytes"])
        self.assertNotEqual(hashlib.sha256(data).hexdigest(), fi["sha256"])
        self.assertEqual(len(parse_csv(zstd_text(path))), fi["rows"])

        offsets = self.wh("SELECT stream, last_lsn, end_lsn, batch, applied_at::text "
                          "FROM zetl_raw._zetl_offsets")
        snap = self.wh("SELECT u::text FROM zetl_raw.users u ORDER BY 1")
        err = self.apply(bad, expect=1)
        self.assertIn(fi["file"], err)
        self.assertIn("sha256", err)
        self.assertEqual(self.wh("SELECT stream, last_lsn, end_lsn, batch, applied_at::text "
                                 "FROM zetl_raw._zetl_offsets"), offsets)
        self.assertEqual(self.wh("SELECT u::text FROM zetl_raw.users u ORDER BY 1"), snap)
        # The genuine batch applies.
        self.apply(good)
        self.assert_same("users", "id, email, name, score", ["tenant_a"])


if __name__ == "__main__":
    main()
