#!/usr/bin/env bash
# Installs the Debian packages zetl builds, tests and demos with.  Idempotent:
# does nothing when everything is present.  Needs root (or sudo) only when
# something is missing.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config clang
  # clang only Recommends its sanitizer and libFuzzer runtimes, and the
  # fuzz build (make test) links them.
  libclang-rt-14-dev
  libpq-dev libyaml-dev libzstd-dev libjansson-dev libssl-dev libcurl4-openssl-dev
  postgresql-15 postgresql-client-15
  zstd
  # Kafka: librdkafka (and its mock cluster, build/kafka-mock), avro-c; kcat and
  # the Python Avro and Kafka clients are the tests' independent readers.
  librdkafka-dev libavro-dev kcat python3-avro python3-confluent-kafka
)
# Tools that may come from elsewhere than a Debian package of that name.
cmds=(python3:python3 node:nodejs)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

for c in "${cmds[@]}"; do
  command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Debian postgresql package starts a cluster on port 5432; zetl's tests
# and demo make their own clusters and never use it.

# npm only after nodejs is in: a nodejs that bundles npm conflicts with
# Debian's npm package, so that package is installed only when no npm exists.
if ! command -v npm >/dev/null 2>&1; then
  echo "installing: npm"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends npm
fi

# Test-only npm packages (s3rver, the S3 peer of the integration tests), at
# the versions package-lock.json pins.  Skipped when already installed.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -d "$root/node_modules/s3rver" ]; then
  echo "installing npm test dependencies (npm ci)"
  (cd "$root" && npm ci --no-audit --no-fund)
fi
