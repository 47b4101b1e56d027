"""pgoutput reader for the baseline's output: counts the rows pg_recvlogical got."""

import mmap
import os
import struct


def count_pgoutput(path):
    """Counts Insert/Update/Delete messages in a pg_recvlogical pgoutput file.

    pg_recvlogical writes each message's bytes followed by one '\\n'. Messages
    are self-delimiting, so the file is walked message by message (protocol
    versions 1-4, streaming on). Rows of streamed transactions count at Stream
    Commit; a Stream Abort drops the rows sent under that (sub)transaction xid.
    Returns {"I": n, "U": n, "D": n, "T": n, "txns": n}.
    """
    counts = {"I": 0, "U": 0, "D": 0, "T": 0, "txns": 0}
    size = os.path.getsize(path)
    if size == 0:
        return counts
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as b:
        u16 = struct.Struct(">H").unpack_from
        u32 = struct.Struct(">I").unpack_from
        pos, in_stream = 0, False
        pending = {}  # xid -> {"I":..,...} rows of streamed transactions

        def cstr(p):
            return b.find(b"\0", p) + 1

        def tuple_end(p):
            (ncols,) = u16(b, p)
            p += 2
            for _ in range(ncols):
                kind = b[p]
                p += 1
                if kind == 0x74 or kind == 0x62:  # 't', 'b'
                    (ln,) = u32(b, p)
                    p += 4 + ln
            return p

        def add(kind, xid):
            if in_stream:
                d = pending.setdefault(xid, {"I": 0, "U": 0, "D": 0, "T": 0})
                d[kind] += 1
            else:
                counts[kind] += 1

        while pos < size:
            m = b[pos]
            pos += 1
            xid = None
            if in_stream and m in b"RYIUDTM":
                (xid,) = u32(b, pos)
                pos += 4
            if m == 0x42:  # B: final_lsn, commit_ts, xid
                pos += 20
            elif m == 0x43:  # C: flags, commit_lsn, end_lsn, commit_ts
                pos += 25
                counts["txns"] += 1
            elif m == 0x49:  # I: relid, 'N', tuple
                pos = tuple_end(pos + 5)
                add("I", xid)
            elif m == 0x55:  # U: relid, ['K'|'O' tuple], 'N' tuple
                pos += 4
                if b[pos] in (0x4B, 0x4F):
                    pos = tuple_end(pos + 1)
                pos = tuple_end(pos + 1)
                add("U", xid)
            elif m == 0x44:  # D: relid, 'K'|'O', tuple
                pos = tuple_end(pos + 5)
                add("D", xid)
            elif m == 0x54:  # T: nrels, options, relids
                (n,) = u32(b, pos)
                pos += 5 + 4 * n
                add("T", xid)
            elif m == 0x52:  # R: relid, nspname, relname, replident, ncols, columns
                pos = cstr(cstr(pos + 4)) + 1
                (ncols,) = u16(b, pos)
                pos += 2
                for _ in range(ncols):
                    pos = cstr(pos + 1) + 8
            elif m == 0x59:  # Y: typoid, nspname, typname
                pos = cstr(cstr(pos + 4))
            elif m == 0x4F:  # O: lsn, name
                pos = cstr(pos + 8)
            elif m == 0x4D:  # M: flags, lsn, prefix, length, content
                pos = cstr(pos + 9)
                (n,) = u32(b, pos)
                pos += 4 + n
            elif m == 0x53:  # S: xid, first_segment
                pos += 5
                in_stream = True
            elif m == 0x45:  # E
                in_stream = False
            elif m == 0x63:  # c: xid, flags, commit_lsn, end_lsn, commit_ts
                (cx,) = u32(b, pos)
                pos += 29
                counts["txns"] += 1
                # Subtransactions' rows carry their own xid: a commit takes all
                # that were not aborted (streamed transactions do not overlap
                # in the bench workloads).
                for d in pending.values():
                    for k, v in d.items():
                        counts[k] += v
                pending.clear()
            elif m == 0x41:  # A: xid, subxid [, abort_lsn, abort_ts in v4]
                (ax, sx) = struct.unpack_from(">II", b, pos)
                pos += 8
                if pos < size and b[pos] != 0x0A:
                    pos += 16
                if sx == ax:
                    pending.clear()
                else:
                    pending.pop(sx, None)
            else:
                raise ValueError(f"{path}: unknown pgoutput message 0x{m:02x} at offset "
                                 f"{pos - 1}")
            if pos >= size or b[pos] != 0x0A:
                raise ValueError(f"{path}: message 0x{m:02x} not followed by a newline at "
                                 f"offset {pos}")
            pos += 1
    return counts
