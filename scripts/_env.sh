# Sourced by scripts/demo.sh and scripts/test.sh: creates or reuses the project-local
# virtual environment .venv and installs what the given purpose needs.
#   usage: source scripts/_env.sh demo|test
# Needs nothing but Python 3.11+ (PYTHON=... picks another interpreter) and the
# package registry; no root. Re-installs only when pyproject.toml changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
purpose="${1:?demo or test}"
py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "omnicache-cluster needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv" >&2
  "$py" -m venv "$venv"
fi
sum="$("$venv/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:16])' "$root/pyproject.toml")"
stamp="$venv/.installed-$purpose-$sum"
if [ ! -f "$stamp" ]; then
  echo "installing omnicache-cluster ($purpose) into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
  if [ "$purpose" = test ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root" --group "$root/pyproject.toml:test"
  else
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root"
  fi
  rm -f "$venv"/.installed-"$purpose"-*
  touch "$stamp"
fi
# Keep every Ray socket on loopback in local mode (Ray 2.60 otherwise listens on the
# machine's non-loopback address).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export PATH="$venv/bin:$PATH"
