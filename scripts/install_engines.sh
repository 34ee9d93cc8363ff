#!/usr/bin/env bash
# Installs the offline text-to-speech engines polyhead synthesises its corpus with.
# MBROLA voices live in Debian's contrib/non-free components; we reach them through a
# private source list so the system's apt configuration is left untouched.
set -euo pipefail

MBROLA_VOICES="${POLYHEAD_MBROLA_VOICES:-us1 us2 us3 en1 de1 de2 de3 de4 de5 de6 de7 fr1 fr2 fr4 es1 es2 es3 it3 it4 nl2 nl3 pt1 br1 br3 sw1 sw2 pl1 cz2 hu1 ro1 gr2 tr1 ee1 id1 ir1 mx1 mx2 ca1 la1 hb2 af1}"
APT_PKGS="espeak-ng flite festival festvox-kallpc16k sox fortunes"
STATE_DIR="${POLYHEAD_APT_STATE:-/var/tmp/polyhead-apt}"

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "install_engines: not root and no sudo; install these yourself: $APT_PKGS mbrola voices" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

have_all=1
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || have_all=0; done
dpkg -s mbrola >/dev/null 2>&1 || have_all=0
for v in $MBROLA_VOICES; do dpkg -s "mbrola-$v" >/dev/null 2>&1 || have_all=0; done
if [ "$have_all" = 1 ]; then echo "install_engines: all engines present"; exit 0; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "install_engines: apt-get update failed; continuing with what is cached" >&2
$SUDO apt-get install -y -qq --no-install-recommends $APT_PKGS >/dev/null \
  || echo "install_engines: some engines failed to install; synthesis will use fewer voices" >&2

# Private source list: same URI and suite as the system's main source, plus contrib/non-free.
uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
suite=$(awk '/^Suites:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
  read -r _ uri suite _ < <(grep -m1 '^deb ' /etc/apt/sources.list) || true
fi
if [ -z "${uri:-}" ]; then
  echo "install_engines: no Debian source found; skipping MBROLA voices" >&2; exit 0
fi
$SUDO mkdir -p "$STATE_DIR/lists/partial"
echo "deb $uri $suite main contrib non-free" | $SUDO tee "$STATE_DIR/sources.list" >/dev/null
APT_OPTS=(-o "Dir::Etc::SourceList=$STATE_DIR/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
          -o "Dir::State::Lists=$STATE_DIR/lists")
$SUDO apt-get "${APT_OPTS[@]}" update -qq || { echo "install_engines: contrib list unavailable" >&2; exit 0; }
pkgs="mbrola"; for v in $MBROLA_VOICES; do pkgs="$pkgs mbrola-$v"; done
# One at a time on failure, so a single missing voice does not lose the rest.
$SUDO apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 || {
  for p in $pkgs; do
    $SUDO apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
      || echo "install_engines: $p unavailable" >&2
  done
}
echo "install_engines: done"
