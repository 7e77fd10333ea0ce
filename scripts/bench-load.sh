#!/usr/bin/env bash
# Load harness: autoprov against nginx serving the very same rendered files (auth_basic,
# access_log off, 1 worker), each pinned to CPU 0, wrk pinned to CPU 1, over loopback.
#
#   scripts/bench-load.sh                 # N=100000 phones, 10 s per case
#   N=20000 DURATION=5 scripts/bench-load.sh
#
# Prints one table (both servers, ratios). Stops everything it started, by PID.
set -euo pipefail

N=${N:-100000}
DURATION=${DURATION:-10}
MODEL=${MODEL:-yealink-t46s}
PORT=${PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18088}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/autoprov-bench.XXXXXX)}
mkdir -p "$WORK"
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || ! need bc; then
    echo "installing wrk and nginx (apt-get)…" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light bc >/dev/null 2>&1 \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx bc >/dev/null
fi
need taskset || { echo "taskset (util-linux) is required" >&2; exit 1; }

echo "building release…" >&2
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example loadtool)
BIN=$ROOT/target/release/autoprov
TOOL=$ROOT/target/release/examples/loadtool
PIN_SERVER="taskset -c 0"
PIN_LOAD="taskset -c 1"

start_autoprov() { # $1 = RUST_LOG value
    RUST_LOG=$1 $PIN_SERVER "$BIN" --listen 127.0.0.1:$PORT --data "$WORK/data" \
        --models "$ROOT/models" --templates "$ROOT/templates" >"$WORK/autoprov.out" 2>"$WORK/autoprov.log" &
    AP_PID=$!
    PIDS+=("$AP_PID")
    local t0; t0=$(date +%s.%N)
    until curl -s -o /dev/null "http://127.0.0.1:$PORT/api/v1/models"; do sleep 0.02; done
    READY=$(echo "$(date +%s.%N) - $t0" | bc)
}
stop_autoprov() {
    kill "$AP_PID" 2>/dev/null || echo "autoprov (pid $AP_PID) had already exited" >&2
    wait "$AP_PID" 2>/dev/null || true
}

# --- seed, then a cold storm on a fresh process (the export is the storm's output)
start_autoprov "autoprov=warn"
TOKEN=$(cat "$WORK/data/admin-token")
CREDS=$(cat "$WORK/data/provisioning-credentials")
echo "seeding $N phones ($MODEL)…" >&2
$PIN_LOAD "$TOOL" seed "http://127.0.0.1:$PORT" "$TOKEN" "$N" "$MODEL" >&2
stop_autoprov
# (d) twice, like every case: request log at info, then off, each on a fresh process and a
# render tree with nothing in it (the seeded folder is copied first and put back between).
cp -a "$WORK/data" "$WORK/data.seeded"
start_autoprov "autoprov=info"
STORM_INFO=$($PIN_LOAD "$TOOL" storm "http://127.0.0.1:$PORT" "$CREDS" "$N" "$WORK/www-info")
echo "log info: $STORM_INFO" >&2
stop_autoprov
rm -rf "$WORK/data" "$WORK/www-info"
mv "$WORK/data.seeded" "$WORK/data"
start_autoprov "autoprov=warn"
STORM_OFF=$($PIN_LOAD "$TOOL" storm "http://127.0.0.1:$PORT" "$CREDS" "$N" "$WORK/www")
echo "log off: $STORM_OFF" >&2
stop_autoprov

# --- nginx on the exported files
mkdir -p "$WORK/nginx"
echo "${CREDS%%:*}:{PLAIN}${CREDS#*:}" >"$WORK/nginx/htpasswd"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type text/plain;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
        auth_basic "autoprov";
        auth_basic_user_file $WORK/nginx/htpasswd;
    }
}
EOF
$PIN_SERVER nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NG_PID=$!
PIDS+=("$NG_PID")
until curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/"; do sleep 0.05; done

"$TOOL" macs "$N" >"$WORK/macs.txt"
FIRST=$(head -1 "$WORK/macs.txt")
AUTH="Authorization: Basic $(printf '%s' "$CREDS" | base64 -w0)"
cat >"$WORK/spread.lua" <<EOF
local macs = {}
for line in io.lines("$WORK/macs.txt") do macs[#macs + 1] = line end
local i = 0
request = function()
    i = i + 1
    local m = macs[math.random(#macs)]
    return wrk.format("GET", "/" .. m .. ".cfg")
end
EOF

# wrk → "requests/s p50_ms p99_ms"
run_wrk() { # $1 port, $2 conns, rest: extra wrk args (before the URL)
    local port=$1 conns=$2; shift 2
    $PIN_LOAD wrk -t1 -c"$conns" -d"${DURATION}s" --latency -H "$AUTH" "$@" "http://127.0.0.1:$port/" 2>&1 |
        awk '
            /Requests\/sec/ { rps = $2 }
            /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
            /Non-2xx or 3xx/ { bad = $NF }
            END {
                n = split(p50 " " p99, a, " ")
                for (i = 1; i <= n; i++) {
                    v = a[i]; m = 1
                    if (v ~ /us$/) { m = 0.001 } else if (v ~ /ms$/) { m = 1 } else if (v ~ /s$/) { m = 1000 }
                    gsub(/[a-z]+$/, "", v); a[i] = v * m
                }
                printf "%.0f %.3f %.3f %s\n", rps, a[1], a[2], (bad == "" ? 0 : bad)
            }'
}

etag_of() { curl -s -D - -o /dev/null -H "$AUTH" "http://127.0.0.1:$1/$FIRST.cfg" | awk -F': ' 'tolower($1)=="etag"{gsub("\r","",$2); print $2}'; }

declare -A R RESTART ADMIN RSS
measure() { # $1 label, $2 port
    local l=$1 p=$2
    R[$l,a]=$($PIN_LOAD wrk -t1 -c64 -d"${DURATION}s" --latency -H "$AUTH" "http://127.0.0.1:$p/$FIRST.cfg" 2>&1 | awk '/Requests\/sec/{print $2}')
    R[$l,b64]=$(run_wrk "$p" 64 -s "$WORK/spread.lua")
    R[$l,b256]=$(run_wrk "$p" 256 -s "$WORK/spread.lua")
    local tag; tag=$(etag_of "$p")
    R[$l,c]=$($PIN_LOAD wrk -t1 -c64 -d"${DURATION}s" -H "$AUTH" -H "If-None-Match: $tag" "http://127.0.0.1:$p/$FIRST.cfg" 2>&1 | awk '/Requests\/sec/{print $2}')
}

measure nginx $NGINX_PORT

for LOG in info off; do
    if [ "$LOG" = info ]; then FILTER="autoprov=info"; else FILTER="autoprov=warn"; fi
    start_autoprov "$FILTER"
    RESTART[$LOG]=$READY
    # Steady state: the startup warm-up (a background thread filling the memory tiers,
    # 0.2-0.6 s for 100,000 phones) shares CPU 0 and is over before the cases start.
    sleep 1
    measure "ap-$LOG" $PORT
    # (e) admin write latency while (b) c64 runs
    $PIN_LOAD wrk -t1 -c64 -d"${DURATION}s" -H "$AUTH" -s "$WORK/spread.lua" "http://127.0.0.1:$PORT" >/dev/null 2>&1 &
    WRK_PID=$!
    ADMIN[$LOG]=$("$TOOL" admin "http://127.0.0.1:$PORT" "$(cat "$WORK/data/admin-token")" "$N" $((DURATION - 1)) 50)
    wait "$WRK_PID" || true
    RSS[$LOG]=$(awk '/VmHWM/{print $2/1024 " MB"}' /proc/$AP_PID/status)
    stop_autoprov
done

DISK=$(du -sm "$WORK/data" | cut -f1)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }'; }
col() { echo "$1" | awk -v i="$2" '{print $i}'; }

echo
echo "autoprov vs nginx — N=$N phones ($MODEL), ${DURATION}s per case, server on CPU 0, wrk on CPU 1"
echo "machine: $cpu, $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
printf "| case | nginx | autoprov (log info) | ratio | autoprov (log off) | ratio |\n|---|---|---|---|---|---|\n"
row() { # $1 label $2 nginx $3 info $4 off
    printf "| %s | %s | %s | %s | %s | %s |\n" "$1" "$2" "$3" "$(ratio "$3" "$2")" "$4" "$(ratio "$4" "$2")"
}
row "(a) one file, c64, req/s" "${R[nginx,a]}" "${R[ap-info,a]}" "${R[ap-off,a]}"
row "(b) all MACs, c64, req/s" "$(col "${R[nginx,b64]}" 1)" "$(col "${R[ap-info,b64]}" 1)" "$(col "${R[ap-off,b64]}" 1)"
row "(b) all MACs, c256, req/s" "$(col "${R[nginx,b256]}" 1)" "$(col "${R[ap-info,b256]}" 1)" "$(col "${R[ap-off,b256]}" 1)"
printf "| (b) c64 p50 / p99 ms | %s / %s | %s / %s | | %s / %s | |\n" \
    "$(col "${R[nginx,b64]}" 2)" "$(col "${R[nginx,b64]}" 3)" "$(col "${R[ap-info,b64]}" 2)" "$(col "${R[ap-info,b64]}" 3)" "$(col "${R[ap-off,b64]}" 2)" "$(col "${R[ap-off,b64]}" 3)"
printf "| (b) c256 p50 / p99 ms | %s / %s | %s / %s | | %s / %s | |\n" \
    "$(col "${R[nginx,b256]}" 2)" "$(col "${R[nginx,b256]}" 3)" "$(col "${R[ap-info,b256]}" 2)" "$(col "${R[ap-info,b256]}" 3)" "$(col "${R[ap-off,b256]}" 2)" "$(col "${R[ap-off,b256]}" 3)"
row "(c) If-None-Match → 304, req/s" "${R[nginx,c]}" "${R[ap-info,c]}" "${R[ap-off,c]}"
echo "| (d) cold storm | — | $STORM_INFO | | $STORM_OFF | |"
echo "| (e) admin writes during (b) | — | ${ADMIN[info]} | | ${ADMIN[off]} | |"
echo "| (f) peak RSS | — | ${RSS[info]} | | ${RSS[off]} | |"
echo "| (f) on-disk size | $(du -sm "$WORK/www" | cut -f1) MB (files) | $DISK MB (store) | | | |"
echo "| (f) restart to ready | — | ${RESTART[info]} s | | ${RESTART[off]} s | |"
echo
echo "work folder: $WORK"
