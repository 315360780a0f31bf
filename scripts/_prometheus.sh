# Sourced by scripts/test.sh: finds or installs a real Prometheus server for
# tests/test_prometheus_server.py and exports OMNICACHE_PROMETHEUS_BIN.
#   order: $OMNICACHE_PROMETHEUS_BIN if set, `prometheus` on PATH, the copy unpacked
#   into .tools/ by an earlier run, else Debian's package downloaded and unpacked
#   into .tools/ (no root needed to unpack; as root, the package lists are updated
#   first when the download fails). No service is installed or started.
# When none can be had, OMNICACHE_PROMETHEUS_MISSING says why and the test fails
# with that message (OMNICACHE_ALLOW_NO_PROMETHEUS=1 turns the failure into a skip).
_prom_find() {
  local tools="$root/.tools/prometheus"
  if [ -n "${OMNICACHE_PROMETHEUS_BIN:-}" ] && [ -x "$OMNICACHE_PROMETHEUS_BIN" ]; then return 0; fi
  if command -v prometheus >/dev/null 2>&1; then
    OMNICACHE_PROMETHEUS_BIN="$(command -v prometheus)"; return 0
  fi
  if [ -x "$tools/usr/bin/prometheus" ]; then
    OMNICACHE_PROMETHEUS_BIN="$tools/usr/bin/prometheus"; return 0
  fi
  command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || {
    OMNICACHE_PROMETHEUS_MISSING="no prometheus on PATH and no apt-get/dpkg to fetch Debian's package; install Prometheus (2.x) and put it on PATH or set OMNICACHE_PROMETHEUS_BIN"
    return 1
  }
  local dl; dl="$(mktemp -d)"
  echo "fetching Debian's prometheus package into $tools" >&2
  if ! (cd "$dl" && apt-get download -q prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -q >/dev/null 2>&1 || true
      (cd "$dl" && apt-get download -q prometheus >/dev/null 2>&1) || true
    fi
  fi
  local deb; deb="$(ls "$dl"/prometheus_*.deb 2>/dev/null | head -n 1)"
  if [ -z "$deb" ]; then
    rm -rf "$dl"
    OMNICACHE_PROMETHEUS_MISSING="could not download Debian's prometheus package (apt-get download prometheus failed); install Prometheus (2.x) and put it on PATH or set OMNICACHE_PROMETHEUS_BIN"
    return 1
  fi
  mkdir -p "$tools" && dpkg -x "$deb" "$tools" && rm -rf "$dl"
  OMNICACHE_PROMETHEUS_BIN="$tools/usr/bin/prometheus"
  [ -x "$OMNICACHE_PROMETHEUS_BIN" ]
}
OMNICACHE_PROMETHEUS_MISSING=""
if ! _prom_find; then
  OMNICACHE_PROMETHEUS_BIN=""
  echo "WARNING: no Prometheus server: $OMNICACHE_PROMETHEUS_MISSING" >&2
fi
export OMNICACHE_PROMETHEUS_BIN OMNICACHE_PROMETHEUS_MISSING
