#!/usr/bin/env bash
# Load harness: autoprov against nginx serving the very same rendered files (auth_basic,
# access_log off, 1 worker), each pinned to CPU 0, wrk pinned to CPU 1, over loopback.
#
#   scripts/bench-load.sh                          # N=100000 phones, 3 slices of 5 s a case
#   N=20000 DURATION=3 REPS=2 scripts/bench-load.sh
#   BASELINE=e401cc1 scripts/bench-load.sh         # also the build of that revision
#
# With BASELINE (a git revision), that revision is built in a worktree under target/ and
# runs as a fourth server (request log off, a copy of the same store) in the same rotation,
# and a second table compares this build with it case by case (refactors: "no case more
# than 5 % slower" is read off its last column).
#
# The three servers (nginx, autoprov with the request log at info, autoprov with it off)
# run side by side; each case is measured in REPS slices of DURATION seconds per server,
# the servers taking turns (the order rotates every slice), so that a shared machine's
# drift hits all three alike. Figures: req/s the mean of the slices, p50 and p99 their
# median.
# Prints one table (all servers, ratios). Stops everything it started, by PID.
set -euo pipefail

N=${N:-100000}
DURATION=${DURATION:-5}
REPS=${REPS:-3}
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
BASE_BIN=
if [ -n "${BASELINE:-}" ]; then
    BASE_TREE=$ROOT/target/bench-baseline
    echo "building $BASELINE in $BASE_TREE…" >&2
    git -C "$ROOT" worktree remove --force "$BASE_TREE" 2>/dev/null || rm -rf "$BASE_TREE"
    git -C "$ROOT" worktree prune
    git -C "$ROOT" worktree add --detach --force "$BASE_TREE" "$BASELINE" >/dev/null
    (cd "$BASE_TREE" && CARGO_TARGET_DIR=$ROOT/target/bench-baseline-target cargo build --release --quiet)
    BASE_BIN=$ROOT/target/bench-baseline-target/release/autoprov
fi
PIN_SERVER="taskset -c 0"
PIN_LOAD="taskset -c 1"

# Another server on one of the ports would answer in our place: refuse to start.
for p in "$PORT" $((PORT + 1)) $((PORT + 2)) "$NGINX_PORT"; do
    if curl -s -o /dev/null "http://127.0.0.1:$p/"; then
        echo "something already answers on 127.0.0.1:$p; stop it or set PORT/NGINX_PORT" >&2
        exit 1
    fi
done

start_autoprov() { # $1 RUST_LOG value, $2 port, $3 data folder[, $4 binary]; sets AP_PID and READY
    RUST_LOG=$1 $PIN_SERVER "${4:-$BIN}" --listen "127.0.0.1:$2" --data "$3" \
        --models "$ROOT/models" --templates "$ROOT/templates" >"$3.out" 2>"$3.log" &
    AP_PID=$!
    PIDS+=("$AP_PID")
    local t0; t0=$(date +%s.%N)
    until curl -s -o /dev/null "http://127.0.0.1:$2/api/v1/models"; do
        kill -0 "$AP_PID" 2>/dev/null || { echo "autoprov did not start; see $3.log" >&2; exit 1; }
        sleep 0.02
    done
    READY=$(echo "$(date +%s.%N) - $t0" | bc)
}
stop_autoprov() {
    kill "$AP_PID" 2>/dev/null || echo "autoprov (pid $AP_PID) had already exited" >&2
    wait "$AP_PID" 2>/dev/null || true
}

# --- seed, then a cold storm on a fresh process (the export is the storm's output)
start_autoprov "autoprov=warn" "$PORT" "$WORK/data"
TOKEN=$(cat "$WORK/data/admin-token")
CREDS=$(cat "$WORK/data/provisioning-credentials")
echo "seeding $N phones ($MODEL)…" >&2
$PIN_LOAD "$TOOL" seed "http://127.0.0.1:$PORT" "$TOKEN" "$N" "$MODEL" >&2
stop_autoprov
# (d) twice, like every case: request log at info, then off, each on a fresh process and a
# render tree with nothing in it (two copies of the seeded folder; each keeps its storm's
# render tree for the cases after).
rm -rf "$WORK/data-info" "$WORK/data-base"
cp -a "$WORK/data" "$WORK/data-info"
[ -z "$BASE_BIN" ] || cp -a "$WORK/data" "$WORK/data-base"
# The copy's dirty pages (~180 MB) are written back now, not during the first storm (at
# info, it was the lower of the two in six of the seven runs before this line).
sync
start_autoprov "autoprov=info" "$PORT" "$WORK/data-info"
STORM_INFO=$($PIN_LOAD "$TOOL" storm "http://127.0.0.1:$PORT" "$CREDS" "$N" "$WORK/www-info")
echo "log info: $STORM_INFO" >&2
stop_autoprov
rm -rf "$WORK/www-info"
start_autoprov "autoprov=warn" "$PORT" "$WORK/data"
STORM_OFF=$($PIN_LOAD "$TOOL" storm "http://127.0.0.1:$PORT" "$CREDS" "$N" "$WORK/www")
echo "log off: $STORM_OFF" >&2
stop_autoprov
if [ -n "$BASE_BIN" ]; then
    # The baseline's cold storm, on its own copy of the seeded store (nothing rendered yet).
    rm -rf "$WORK/www-base"
    sync
    start_autoprov "autoprov=warn" "$PORT" "$WORK/data-base" "$BASE_BIN"
    STORM_BASE=$($PIN_LOAD "$TOOL" storm "http://127.0.0.1:$PORT" "$CREDS" "$N" "$WORK/www-base")
    echo "baseline, log off: $STORM_BASE" >&2
    stop_autoprov
    rm -rf "$WORK/www-base"
fi

# --- the three servers side by side, each idle while another is measured
mkdir -p "$WORK/nginx"
echo "${CREDS%%:*}:{PLAIN}${CREDS#*:}" >"$WORK/nginx/htpasswd"
# Started as root, nginx's worker drops to `nobody`, which cannot enter the 0700 work
# folder: keep it as the user that started it.
NGINX_USER=""
[ "$(id -u)" = 0 ] && NGINX_USER="user root;"
cat >"$WORK/nginx/nginx.conf" <<NGINX
$NGINX_USER
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
NGINX
$PIN_SERVER nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NG_PID=$!
PIDS+=("$NG_PID")
until curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/"; do
    kill -0 "$NG_PID" 2>/dev/null || { echo "nginx did not start; see $WORK/nginx/error.log" >&2; exit 1; }
    sleep 0.05
done

declare -A PORT_OF=([nginx]=$NGINX_PORT [ap-info]=$PORT [ap-off]=$((PORT + 1)) [ap-base]=$((PORT + 2)))
declare -A PID_OF=([nginx]=$NG_PID) RESTART ADMIN RSS
# Restart to ready, each on the folder its storm filled. The startup warm-up (a background
# thread filling the memory tiers, 0.2-0.6 s for 100,000 phones) shares CPU 0, so the
# cases start 1 s after the last server answers.
start_autoprov "autoprov=info" "${PORT_OF[ap-info]}" "$WORK/data-info"
PID_OF[ap-info]=$AP_PID
RESTART[info]=$READY
sleep 1
start_autoprov "autoprov=warn" "${PORT_OF[ap-off]}" "$WORK/data"
PID_OF[ap-off]=$AP_PID
RESTART[off]=$READY
sleep 1
if [ -n "$BASE_BIN" ]; then
    start_autoprov "autoprov=warn" "${PORT_OF[ap-base]}" "$WORK/data-base" "$BASE_BIN"
    PID_OF[ap-base]=$AP_PID
    RESTART[base]=$READY
    sleep 1
fi

"$TOOL" macs "$N" >"$WORK/macs.txt"
FIRST=$(head -1 "$WORK/macs.txt")
AUTH="Authorization: Basic $(printf '%s' "$CREDS" | base64 -w0)"
# Every MAC once a pass, in an order shuffled once, each wrk connection starting at its own
# place. The requests are formatted up front (in init, once wrk knows the Host header):
# formatting one per request in Lua took wrk's core to 85-90 %, and a load generator near
# its limit flattens the faster server's figures more than the slower one's.
cat >"$WORK/spread.lua" <<LUA
local reqs, n, i = {}, 0, 0
init = function(args)
    local macs = {}
    for line in io.lines("$WORK/macs.txt") do macs[#macs + 1] = line end
    math.randomseed(42)
    for k = #macs, 2, -1 do
        local j = math.random(k)
        macs[k], macs[j] = macs[j], macs[k]
    end
    for k = 1, #macs do reqs[k] = wrk.format("GET", "/" .. macs[k] .. ".cfg") end
    n = #reqs
end
request = function()
    i = i % n + 1
    return reqs[i]
end
LUA

# wrk → "requests/s p50_ms p99_ms non-2xx/3xx"
run_wrk() { # $1 port, $2 conns, $3 path, rest: extra wrk args (before the URL)
    local port=$1 conns=$2 path=$3
    shift 3
    $PIN_LOAD wrk -t1 -c"$conns" -d"${DURATION}s" --latency -H "$AUTH" "$@" "http://127.0.0.1:$port$path" 2>&1 |
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
declare -A TAG
SERVERS=(nginx ap-info ap-off)
[ -n "$BASE_BIN" ] && SERVERS+=(ap-base)
for s in "${SERVERS[@]}"; do TAG[$s]=$(etag_of "${PORT_OF[$s]}"); done
# What the table claims, checked once before measuring: the three serve the same bytes, and
# each answers its own ETag with a 304 (else case (c) would time 200s).
body_of() { curl -s -H "$AUTH" "http://127.0.0.1:$1/$FIRST.cfg" | sha256sum; }
for s in "${SERVERS[@]}"; do
    [ "$(body_of "${PORT_OF[$s]}")" = "$(body_of "${PORT_OF[nginx]}")" ] ||
        { echo "$s serves other bytes than nginx for /$FIRST.cfg" >&2; exit 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" -H "If-None-Match: ${TAG[$s]}" \
        "http://127.0.0.1:${PORT_OF[$s]}/$FIRST.cfg")
    [ "$code" = 304 ] || { echo "$s answers If-None-Match: ${TAG[$s]} with $code, not 304" >&2; exit 1; }
done

one_case() { # $1 case, $2 server
    local p=${PORT_OF[$2]}
    case $1 in
        a) run_wrk "$p" 64 "/$FIRST.cfg" ;;
        b64) run_wrk "$p" 64 / -s "$WORK/spread.lua" ;;
        b256) run_wrk "$p" 256 / -s "$WORK/spread.lua" ;;
        c) run_wrk "$p" 64 "/$FIRST.cfg" -H "If-None-Match: ${TAG[$2]}" ;;
    esac
}

# R[server,case]: the mean over the slices of req/s, the median of their p50 and of their
# p99 (one stalled slice, such as a page-cache miss of nginx's, would otherwise be the
# whole figure), and the total of responses that were neither 2xx nor 3xx.
median() { sort -g | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); print (NR % 2) ? v[m] : (v[m] + v[m + 1]) / 2 }'; }
summary() { # $1: the slices' "rps p50 p99 bad" lines
    local rps p50 p99 bad
    rps=$(printf '%s' "$1" | awk '{ s += $1 } END { printf "%.0f", s / NR }')
    p50=$(printf '%s' "$1" | awk '{ print $2 }' | median)
    p99=$(printf '%s' "$1" | awk '{ print $3 }' | median)
    bad=$(printf '%s' "$1" | awk '{ s += $4 } END { print s }')
    printf '%s %.2f %.2f %s' "$rps" "$p50" "$p99" "$bad"
}
declare -A R
for c in a b64 b256 c; do
    declare -A SL=()
    for ((r = 0; r < REPS; r++)); do
        for ((k = 0; k < ${#SERVERS[@]}; k++)); do
            s=${SERVERS[$(((k + r) % ${#SERVERS[@]}))]}
            out=$(one_case "$c" "$s")
            echo "case $c slice $((r + 1)) $s: $out" >&2
            SL[$s]+="$out"$'\n'
        done
    done
    for s in "${SERVERS[@]}"; do
        R[$s,$c]=$(summary "${SL[$s]}")
    done
    unset SL
done

# (e) admin write latency while (b) c64 runs, then (f) peak RSS
LEVELS=(info off)
[ -n "$BASE_BIN" ] && LEVELS+=(base)
for l in "${LEVELS[@]}"; do
    s=ap-$l
    $PIN_LOAD wrk -t1 -c64 -d"${DURATION}s" -H "$AUTH" -s "$WORK/spread.lua" "http://127.0.0.1:${PORT_OF[$s]}" >/dev/null 2>&1 &
    WRK_PID=$!
    ADMIN[$l]=$("$TOOL" admin "http://127.0.0.1:${PORT_OF[$s]}" "$TOKEN" "$N" $((DURATION > 1 ? DURATION - 1 : 1)) 50)
    wait "$WRK_PID" || true
    RSS[$l]=$(awk '/VmHWM/{print $2/1024 " MB"}' "/proc/${PID_OF[$s]}/status")
done

DISK=$(du -sm "$WORK/data/store" | cut -f1)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')

# Three places: a target of 1.5× is read off this column, and two places print 1.496 as 1.50.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f×", a / b; else print "-" }'; }
col() { echo "$1" | awk -v i="$2" '{print $i}'; }

echo
echo "autoprov vs nginx — N=$N phones ($MODEL); each case $REPS slices of ${DURATION}s per server, the servers taking turns; servers on CPU 0, wrk on CPU 1"
echo "machine: $cpu, $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
printf "| case | nginx | autoprov (log info) | ratio | autoprov (log off) | ratio |\n|---|---|---|---|---|---|\n"
row() { # $1 label, $2 case
    local n i o
    n=$(col "${R[nginx,$2]}" 1)
    i=$(col "${R[ap-info,$2]}" 1)
    o=$(col "${R[ap-off,$2]}" 1)
    printf "| %s | %s | %s | %s | %s | %s |\n" "$1" "$n" "$i" "$(ratio "$i" "$n")" "$o" "$(ratio "$o" "$n")"
}
lat() { # $1 label, $2 case
    printf "| %s | %s / %s | %s / %s | | %s / %s | |\n" "$1" \
        "$(col "${R[nginx,$2]}" 2)" "$(col "${R[nginx,$2]}" 3)" "$(col "${R[ap-info,$2]}" 2)" \
        "$(col "${R[ap-info,$2]}" 3)" "$(col "${R[ap-off,$2]}" 2)" "$(col "${R[ap-off,$2]}" 3)"
}
row "(a) one file, c64, req/s" a
row "(b) all MACs, c64, req/s" b64
row "(b) all MACs, c256, req/s" b256
lat "(b) c64 p50 / p99 ms" b64
lat "(b) c256 p50 / p99 ms" b256
row "(c) If-None-Match → 304, req/s" c
echo "| (d) cold storm | — | $STORM_INFO | | $STORM_OFF | |"
echo "| (e) admin writes during (b) | — | ${ADMIN[info]} | | ${ADMIN[off]} | |"
echo "| (f) peak RSS | — | ${RSS[info]} | | ${RSS[off]} | |"
echo "| (f) on-disk size | $(du -sm "$WORK/www" | cut -f1) MB (files) | $DISK MB (store) | | | |"
echo "| (f) restart to ready | — | ${RESTART[info]} s | | ${RESTART[off]} s | |"
bad=""
for s in "${SERVERS[@]}"; do
    for c in a b64 b256 c; do
        n=$(col "${R[$s,$c]}" 4)
        [ "$n" = 0 ] || bad="$bad $s/$c: $n;"
    done
done
[ -z "$bad" ] || echo "responses that were neither 2xx nor 3xx:$bad"
if [ -n "$BASE_BIN" ]; then
    echo
    echo "this build ($(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src || echo ', modified')) against $BASELINE, both with the request log off, same run"
    echo
    printf "| case | before (%s) | after | after/before |\n|---|---|---|---|\n" "$BASELINE"
    cmp_row() { # $1 label, $2 case, $3 column (1 req/s, 2 p50, 3 p99)
        local b a
        b=$(col "${R[ap-base,$2]}" "$3")
        a=$(col "${R[ap-off,$2]}" "$3")
        printf "| %s | %s | %s | %s |\n" "$1" "$b" "$a" "$(ratio "$a" "$b")"
    }
    cmp_row "(a) one file, c64, req/s" a 1
    cmp_row "(b) all MACs, c64, req/s" b64 1
    cmp_row "(b) all MACs, c256, req/s" b256 1
    cmp_row "(b) c64 p99 ms" b64 3
    cmp_row "(b) c256 p99 ms" b256 3
    cmp_row "(c) If-None-Match → 304, req/s" c 1
    echo "| (d) cold storm | $STORM_BASE | $STORM_OFF | |"
    echo "| (e) admin writes during (b) | ${ADMIN[base]} | ${ADMIN[off]} | |"
    echo "| (f) peak RSS | ${RSS[base]} | ${RSS[off]} | |"
    echo "| (f) restart to ready | ${RESTART[base]} s | ${RESTART[off]} s | |"
fi
echo
echo "work folder: $WORK"
