#!/usr/bin/env bash
# Fuzzes the admin API from its own OpenAPI document with schemathesis: builds and starts
# the real server on 127.0.0.1 (a free port, a temp data folder), seeds a domain and an
# account linked to a phone, then runs schemathesis against
# http://127.0.0.1:PORT/api/v1/openapi.json with the admin token and every check
# (CHECKS=all): a 5xx, a response outside its documented schema, a request the document
# allows but the server refuses (or the reverse), … fail the run; scripts/schemathesis.toml
# holds the one documented exception (CSV import). Results are recorded in
# docs/RELIABILITY.md (## Schemathesis).
#
#   scripts/schemathesis.sh                     # MAX_EXAMPLES=30
#   MAX_EXAMPLES=100 SEED=1 scripts/schemathesis.sh
#   KEEP=1 scripts/schemathesis.sh              # keep the work folder (data, server.log, report)
#
# Needs python3 (with venv); schemathesis is pip-installed once into
# target/schemathesis-venv (SCHEMATHESIS_VERSION pins it). Loopback only.
set -euo pipefail

MAX_EXAMPLES=${MAX_EXAMPLES:-30}
CHECKS=${CHECKS:-all}
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/target/schemathesis-venv}
WORK=${WORK:-$(mktemp -d /tmp/autoprov-schemathesis.XXXXXX)}
mkdir -p "$WORK"
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "work folder kept: $WORK" >&2; fi
}
trap cleanup EXIT

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV…" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

echo "building…" >&2
(cd "$ROOT" && cargo build --quiet --bin autoprov)
BIN=$ROOT/target/debug/autoprov

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
"$BIN" serve --listen "127.0.0.1:$PORT" --data "$WORK/data" \
    --models "$ROOT/models" --templates "$ROOT/templates" >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "$BASE/api/v1/openapi.json"; then break; fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "server exited:" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
TOKEN=$(tr -d '\n' <"$WORK/data/admin-token")

api() { # METHOD PATH [BODY] → fails unless 2xx
    curl -sf -o /dev/null -X "$1" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' ${3:+--data "$3"} "$BASE/api/v1$2"
}
api PUT /domains/example.com '{"defaults":{"device-provisioning-registration-core-server":"sip.example.com"}}'
api PUT /domains/example.com/users/100/devices/d100 \
    '{"device-models-model":"yealink-t46s","device-provisioning-mac-address":"001565aabbcc"}'
api PUT /domains/example.com/users/101/devices/d101 '{}'
api POST /tokens '{"domain":"example.com"}'
# A fetch, so the phone has a `last-fetch`, and an unknown MAC for /unprovisioned.
read -r PUSER PPASS < <(tr ':' ' ' <"$WORK/data/provisioning-credentials" 2>/dev/null || true)
if [ -n "${PUSER:-}" ]; then
    curl -s -o /dev/null -u "$PUSER:$PPASS" "$BASE/001565aabbcc.cfg" || true
    curl -s -o /dev/null -u "$PUSER:$PPASS" "$BASE/001565000001.cfg" || true
fi

echo "schemathesis $("$VENV/bin/schemathesis" --version | awk '{print $NF}') against $BASE, max examples $MAX_EXAMPLES" >&2
START=$(date +%s)
set +e
# From the work folder: schemathesis keeps its cache (.schemathesis/) in the current one.
cd "$WORK"
"$VENV/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" \
    run "$BASE/api/v1/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    ${SEED:+--seed "$SEED"} \
    --workers 1 \
    --request-timeout 10 \
    --report junit --report-dir "$WORK/report" \
    --output-sanitize true
RC=$?
set -e
echo "schemathesis exit $RC in $(($(date +%s) - START)) s" >&2
if grep -q "panicked" "$WORK/server.log"; then
    echo "the server log has a panic:" >&2
    grep -n "panicked" "$WORK/server.log" >&2
    RC=1
fi
exit "$RC"
