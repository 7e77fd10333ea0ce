#!/usr/bin/env bash
# Crash-safety loop: the release binary is SIGKILLed at random points while admin writes
# stream, restarted on the same data folder, and every write it acknowledged with a 2xx
# must read back. Results are recorded in docs/RELIABILITY.md (## Crash safety).
#
#   scripts/crash-loop.sh                  # CYCLES=25 WORKERS=4
#   CYCLES=100 WORKERS=8 scripts/crash-loop.sh
#   KEEP=1 scripts/crash-loop.sh           # keep the work folder (data, server.log)
#
# Exits non-zero on any lost write, a store that does not open, or a non-2xx answer.
# Then it also checks the recovery path: export → import → export is byte-identical.
set -euo pipefail

CYCLES=${CYCLES:-25}
WORKERS=${WORKERS:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/autoprov-crash.XXXXXX)}
mkdir -p "$WORK"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$WORK"' EXIT; fi

echo "building release…" >&2
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example crashloop)
BIN=$ROOT/target/release/autoprov

"$ROOT/target/release/examples/crashloop" "$BIN" "$ROOT" "$WORK" "$CYCLES" "$WORKERS"

# The store every cycle left behind, through the recovery path.
"$BIN" export --data "$WORK/data" --output "$WORK/export.json"
"$BIN" import --data "$WORK/restored" "$WORK/export.json"
"$BIN" export --data "$WORK/restored" --output "$WORK/export2.json"
cmp "$WORK/export.json" "$WORK/export2.json"
echo "recovery path: export ($(wc -c <"$WORK/export.json") bytes) → import → export is byte-identical"
