#!/usr/bin/env bash
# Benchmark entry point (`make bench`): installs gnuplot-nox when it is missing
# (idempotent), then hands everything to bench/zetlbench.py.
#
#   bench/run.sh ZETL_BIN [workload ...] [--rows N] [--seed S] [--repeat R] ...
#   bench/run.sh --help
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $# -lt 1 ]]; then
    echo "usage: bench/run.sh ZETL_BIN [workload ...] [options]  (bench/run.sh --help)" >&2
    exit 2
fi

# gnuplot draws the SVGs; without it the run still produces JSON and the table.
if ! command -v gnuplot >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing gnuplot-nox" >&2
        (apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 &&
              apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null 2>&1; }) ||
            echo "bench: could not install gnuplot-nox; SVG plots are skipped" >&2
    else
        echo "bench: gnuplot not found (apt-get install gnuplot-nox); SVG plots are skipped" >&2
    fi
fi

exec python3 "$here/zetlbench.py" "$@"
