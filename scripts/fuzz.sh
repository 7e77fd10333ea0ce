#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a fixed time, one after the other, and prints
# per target the executions, the corpus size and whether it crashed.
#
# Usage:
#   scripts/fuzz.sh                    # every target, FUZZ_SECONDS (default 300) each
#   FUZZ_SECONDS=120 scripts/fuzz.sh   # shorter runs
#   scripts/fuzz.sh mac_path authorization   # only these targets
#
# Environment:
#   FUZZ_SECONDS  seconds per target (libFuzzer -max_total_time), default 300
#   FUZZ_TIMEOUT  seconds for one input before libFuzzer reports a hang, default 20
#   FUZZ_ARGS     extra libFuzzer flags, appended as they are
#
# Uses the nightly toolchain when rustup has it; otherwise the stable one with
# RUSTC_BOOTSTRAP=1 (libFuzzer's sanitizer flags are nightly-only, and a machine that reaches
# only the package registries cannot install nightly). Installs cargo-fuzz when missing.
# Corpora live in fuzz/corpus/<target> (seeded on the first run from
# tests/golden/ and a few hand-written inputs), crashes in fuzz/artifacts/<target>, logs
# in fuzz/logs/<target>.log. Reproduce a crash with
#   cargo +nightly fuzz run <target>   (or RUSTC_BOOTSTRAP=1 cargo fuzz run <target>)
#       fuzz/artifacts/<target>/crash-...
# and minimise it with
#   cargo +nightly fuzz tmin <target> fuzz/artifacts/<target>/crash-...
# Exit status: 0 when no target crashed, 1 when one did, 2 on a setup error.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-300}
timeout=${FUZZ_TIMEOUT:-20}

if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || exit 2
fi

cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi
[ "${#targets[@]}" -gt 0 ] || { echo "no fuzz targets" >&2; exit 2; }

mkdir -p logs
"${fuzz[@]}" build -O >logs/build.log 2>&1 || { cat logs/build.log >&2; exit 2; }

# Seeds: rendered files of every model for the overlays, a few spellings for the parsers.
seed() {
    local target=$1 dir=corpus/$1
    mkdir -p "$dir"
    [ -z "$(ls -A "$dir")" ] || return 0
    local i=0
    put() { printf '%b' "$1" >"$dir/seed-$i"; i=$((i + 1)); }
    case $target in
    overlay_key_value)
        for f in "$root"/tests/golden/yealink-*/*; do cp "$f" "$dir/golden-$(basename "$(dirname "$f")")-$(basename "$f")"; done
        put 'a = 1\n# c = 9\nb = 2\n\0b\x01x\0z\x01y'
        put '#!version:1.0.0.1\n;x = 1\n  a=1\n\0a\x01 v \0;x\x01w' ;;
    overlay_xml_attribute)
        for f in "$root"/tests/golden/polycom-*/*; do cp "$f" "$dir/golden-$(basename "$(dirname "$f")")-$(basename "$f")"; done
        put '<?xml version="1.0"?>\n<polycomConfig>\n  <reg reg.1.address="1004" reg.1.label="A"/>\n</polycomConfig>\n\0reg.1.label\x01B"&\0new.key\x011' ;;
    overlay_xml_element)
        for f in "$root"/tests/golden/*/*; do
            case $f in */polycom-*|*/yealink-*) continue ;; esac
            cp "$f" "$dir/golden-$(basename "$(dirname "$f")")-$(basename "$f")"
        done
        put '<sysConf>\n  <sip>\n    <line index="1">\n      <RegisterAddr>a</RegisterAddr>\n    </line>\n  </sip>\n</sysConf>\n\0line[1]/RegisterAddr\x01b\0line[2]/EnableReg\x010\0Port\x018080' ;;
    mac_path)
        put '\x0000:15:65:aa:bb:cc'
        put '\x000015.657a.bbcc'
        put '\x00001565AABBCC.cfg'
        put '\x000004f2a1b2c3-app.log'
        put '\x00Yealink SIP-T46S 66.86.0.15 80:5e:c0:11:22:33'
        put '\x00FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 (SN:0004f2a1b2c3) Type/Application'
        put '\x00Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-gf1b8ab6 000413922D24 SXM:0 UXM:0)'
        put '\x00Cisco-CP-8841-3PCC/11.0 (00562b043615)'
        put '\x01\x000015657abbcc'
        put '\x01\x07001565AABBCC\xff\xff' ;;
    authorization)
        put 'Basic cGhvbmU6c2VjcmV0'
        put 'basic   dXNlcjpwYTpzcw==  '
        put 'Bearer abcdef0123456789'
        put 'Digest username="phone", realm="autoprov", nonce="abc", uri="/x.cfg", response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="xyz"' ;;
    esac
}

status=0
printf '%-24s %8s %14s %14s  %s\n' target seconds executions corpus result
for t in "${targets[@]}"; do
    seed "$t"
    mkdir -p "artifacts/$t"
    log=logs/$t.log
    before=$(ls "artifacts/$t" | wc -l)
    set +e
    # shellcheck disable=SC2086
    "${fuzz[@]}" run -O "$t" -- \
        -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    [ -n "$execs" ] || execs=$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    # libFuzzer's corpus (units kept after reduction, total size); the folder also keeps
    # superseded units until `cargo fuzz cmin`.
    corpus=$(grep -Eo 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | sed 's/corp: //')
    [ -n "$corpus" ] || corpus=$(ls "corpus/$t" | wc -l)
    artifacts=$(ls "artifacts/$t" | wc -l)
    if [ "$rc" -ne 0 ] || [ "$artifacts" -gt "$before" ]; then
        status=1
        found=$(grep -Eo "Test unit written to [^ ]+" "$log" | sed 's/Test unit written to //' | tr '\n' ' ')
        result="CRASH (exit $rc) ${found:-see $log}"
    else
        result=ok
    fi
    printf '%-24s %8s %14s %14s  %s\n' "$t" "$seconds" "${execs:-?}" "$corpus" "$result"
done
exit "$status"
