#!/usr/bin/env bash
# End-to-end browser test of the web client against a running IntelliColab.
#
#   web/e2e/run.sh                      # against BASE_URL (default http://127.0.0.1:8080)
#   BASE_URL=http://127.0.0.1:9000 web/e2e/run.sh
#   MOCK=1 web/e2e/run.sh               # against the in-memory mock API (mock-server.mjs)
#
# Skips (exit 0, with the reason printed) when Chromium or Node cannot be had. install.sh
# puts the npm packages into a work directory outside web/ (default <repo>/target/web-e2e),
# because the gateway embeds the web/ directory in its binary (and rebuilds when anything in
# web/ changes). Screenshots of failed steps go to <work dir>/output/ (E2E_OUTPUT to change). In CI, the Rust test
# `cargo test -p intellicolab --test web_e2e` starts the real `intellicolab serve all` on
# free ports and runs e2e.test.mjs against it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${E2E_WORKDIR:-$REPO/target/web-e2e}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export E2E_OUTPUT="${E2E_OUTPUT:-$WORK/output}"

skip() {
  echo "web e2e: SKIPPED: $*"
  exit 0
}

bash "$HERE/install.sh" || true
[ -x "$CHROMIUM" ] || skip "no Chromium at $CHROMIUM and it could not be installed (apt-get install chromium)"
"$CHROMIUM" --version >/dev/null 2>&1 || skip "$CHROMIUM does not start"
command -v node >/dev/null 2>&1 || skip "node is not installed"
[ -d "$WORK/node_modules/playwright-core" ] || skip "playwright-core could not be installed into $WORK (npm ci)"
mkdir -p "$E2E_OUTPUT"

MOCK_PID=""
cleanup() { if [ -n "$MOCK_PID" ]; then kill "$MOCK_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
if [ "${MOCK:-0}" = "1" ]; then
  MOCK_PORT="${MOCK_PORT:-8090}"
  WEB_ROOT="$REPO/web" PORT="$MOCK_PORT" node "$WORK/mock-server.mjs" >"$E2E_OUTPUT/mock-server.log" 2>&1 &
  MOCK_PID=$!
  BASE_URL="http://127.0.0.1:$MOCK_PORT"
fi
export BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"

# Wait (up to 30 s) for the system to answer.
up() { node -e 'fetch(process.env.BASE_URL + "/").then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))'; }
for _ in $(seq 1 60); do
  if up; then break; fi
  sleep 0.5
done
if ! up; then
  echo "web e2e: FAILED: nothing answers at $BASE_URL/ (start the system first, or MOCK=1)"
  exit 1
fi

echo "web e2e: testing $BASE_URL with $("$CHROMIUM" --version 2>/dev/null | head -1)"
cd "$WORK"
node --test e2e.test.mjs
