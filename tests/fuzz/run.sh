#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD_DIR for a short while.
#
# Usage: tests/fuzz/run.sh BUILD_DIR [SECONDS]   (default 20 s per fuzzer, or $FUZZ_TIME)
#
# fuzz_pgoutput starts from a seed corpus made of the captured pgoutput
# fixtures (tests/fixtures/pgoutput/*.hex), each message prefixed with the
# selector byte the fuzzer expects, bare and wrapped in an XLogData frame.
# Prints "<fuzzer>: N runs, no crash" per target; exits 1 when any crashed,
# keeping the crashing input under BUILD_DIR/fuzz-artifacts/<fuzzer>/.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BUILD_DIR [SECONDS]" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
SECS=${2:-${FUZZ_TIME:-20}}
SRC=$(cd "$(dirname "$0")/../.." && pwd)

TMP=$(mktemp -d /tmp/zetl-fuzz.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# Seeds for fuzz_pgoutput: selector = (proto_version - 1) | in_stream << 2,
# plus 16 for the XLogData-wrapped copy.  Huge messages (the TOAST value) are
# left out: they only slow the fuzzer down.
make_pgoutput_seeds() {
    python3 - "$SRC/tests/fixtures/pgoutput" "$1" <<'EOF'
import glob, os, struct, sys
src, out = sys.argv[1], sys.argv[2]
n = 0
for path in sorted(glob.glob(os.path.join(src, "*.hex"))):
    proto, in_stream = 1, False
    for line in open(path):
        line = line.strip()
        if line.startswith("# proto_version"):
            proto = int(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        lsn_text, hexdata = line.split(" ", 1)
        msg = bytes.fromhex(hexdata)
        if len(msg) <= 4096:
            sel = (proto - 1) | (4 if in_stream else 0)
            hi, lo = lsn_text.split("/")
            lsn = int(hi, 16) << 32 | int(lo, 16)
            frame = b"w" + struct.pack(">QQQ", lsn, lsn, 0) + msg
            for data in (bytes([sel]) + msg, bytes([sel | 16]) + frame):
                with open(os.path.join(out, "seed%05d" % n), "wb") as f:
                    f.write(data)
                n += 1
        if msg[:1] == b"S":
            in_stream = True
        elif msg[:1] == b"E":
            in_stream = False
print(n)
EOF
}

status=0
found=0
for fuzzer in "$BUILD"/fuzz_*; do
    if [ ! -f "$fuzzer" ] || [ ! -x "$fuzzer" ]; then
        continue
    fi
    found=1
    name=$(basename "$fuzzer")
    corpus=$TMP/$name/corpus
    artifacts=$BUILD/fuzz-artifacts/$name
    mkdir -p "$corpus" "$artifacts"
    if [ "$name" = fuzz_pgoutput ]; then
        make_pgoutput_seeds "$corpus" >/dev/null
    fi
    log=$TMP/$name/log
    if "$fuzzer" -max_total_time="$SECS" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1; then
        runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
        echo "$name: ${runs:-?} runs, no crash"
    else
        status=1
        tail -n 40 "$log" >&2
        echo "$name: CRASH (inputs kept in $artifacts)"
    fi
done
if [ "$found" = 0 ]; then
    echo "no fuzz_* executables in $BUILD (configure with CC=clang -DZETL_FUZZ=ON)" >&2
    exit 2
fi
exit $status
