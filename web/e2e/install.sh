#!/usr/bin/env bash
# Installs what the browser tests need, idempotently and quietly:
#   - Chromium (Debian's `chromium` package) when it is missing and apt-get can be used as root;
#   - playwright-core (and ws, for the mock) from package-lock.json into the work directory
#     (default <repo>/target/web-e2e: outside web/, which the gateway embeds), re-run only
#     when the lock file changed; the test scripts are copied next to node_modules.
# Never fails: what cannot be installed is reported, and the tests then skip with the reason.
# Exit status: 0 when everything is in place, 1 otherwise.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${E2E_WORKDIR:-$REPO/target/web-e2e}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
ok=0

if [ ! -x "$CHROMIUM" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "web e2e: installing chromium (apt-get)…"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq chromium chromium-driver \
      || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }; } >/dev/null 2>&1 \
      || echo "web e2e: apt-get could not install chromium"
  else
    echo "web e2e: no Chromium at $CHROMIUM and no apt-get as root to install it"
  fi
fi
[ -x "$CHROMIUM" ] || ok=1

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  mkdir -p "$WORK"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE"/*.mjs "$WORK/"
  if ! cmp -s "$HERE/package-lock.json" "$WORK/node_modules/.package-lock.json.installed" 2>/dev/null; then
    if (cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1); then
      cp "$HERE/package-lock.json" "$WORK/node_modules/.package-lock.json.installed"
    else
      echo "web e2e: npm ci failed in $WORK (no registry?)"
      ok=1
    fi
  fi
else
  echo "web e2e: node/npm are not installed"
  ok=1
fi
exit "$ok"
