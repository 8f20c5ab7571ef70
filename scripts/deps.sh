#!/usr/bin/env bash
# Installs the Debian packages dwf needs, when run as root and any is
# missing. Used by `make run`, `make deps` and .ci/run. Without root it only
# reports what is missing.
set -eu
build="gcc make pkg-config libopenblas-dev libjansson-dev libmicrohttpd-dev \
libsqlite3-dev check zlib1g-dev dataset-fashion-mnist curl"
tests="python3-numpy python3-scipy python3-torch libcurl4-openssl-dev curl \
chromium nodejs wrk clang libclang-rt-14-dev"
want="$build"
[ "${1:-}" = "--tests" ] && want="$build $tests"
missing=""
# npm comes with NodeSource's nodejs; Debian's nodejs needs its own npm package
if [ "${1:-}" = "--tests" ] && ! command -v npm >/dev/null 2>&1; then
    want="$want npm"
fi
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "dwf: missing Debian packages:$missing (run as root to install)" >&2
    exit 1
fi
echo "dwf: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
