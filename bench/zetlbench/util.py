"""Small helpers shared by the harness: logging, PostgreSQL tool paths, quoting, LSNs, files."""

import os
import shutil
import socket
import sys


# The bench directory (results/, and the repository above it), not this package.
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PG_BIN = os.environ.get("ZETL_PG_BIN", "/usr/lib/postgresql/15/bin")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def pg_tool(name):
    path = os.path.join(PG_BIN, name)
    return path if os.path.exists(path) else (shutil.which(name) or name)


def as_pg_user(cmd):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def qident(name):
    return '"' + name.replace('"', '""') + '"'


def qlit(text):
    return "'" + text.replace("'", "''") + "'"


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(value):
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


REPO = os.path.dirname(HERE)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
