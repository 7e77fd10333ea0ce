#!/usr/bin/env bash
# Mutation testing (cargo-mutants) on the files where a missed bug costs most: credentials
# and Digest, overlay and escaping, validation rules (API and bulk), cache invalidation and
# revision bumps, conditional GET, tenant scoping. Each group runs only the test binaries
# that exercise it, so a mutant costs one incremental build and a short test run.
#
# Usage:
#   scripts/mutants.sh                      # every group, every mutant (hours on 2 cores)
#   scripts/mutants.sh credentials cache    # only these groups
#   scripts/mutants.sh --diff HEAD~1        # only mutants on lines changed since HEAD~1
#   scripts/mutants.sh --list               # the groups, their files and tests
#
# Environment:
#   MUTANTS_BUDGET   seconds for the whole run (default: none). When it runs out the run
#                    stops, the source is restored, and the mutants not reached are said;
#                    they do not fail the run (a survivor does).
#   MUTANTS_IN_PLACE 1 = mutate this tree instead of a copy (CI: one build dir shared by
#                    every group). The tree is checked to be restored afterwards.
#   MUTANTS_PROFILE  the cargo profile (default `mutants`: no debug info, short relinks;
#                    CI uses `test` to share the build of `cargo test`).
#
# Reports: target/mutants-out/<group>/mutants.out/{caught,missed,timeout,unviable}.txt.
# Exit status: 0 no survivor, 1 a survivor, 2 a setup error. A mutant that makes the tests
# hang past 120 s counts as detected (listed as timed out).
# Documented survivors (not observable; see docs/TESTING.md) are excluded in
# .cargo/mutants.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

# One row a group: name | files | the critical functions (a regex over cargo-mutants'
# names, `file:line:col: replace f ...`; empty = the whole files) | the test targets that
# exercise them. MUTANTS_WHOLE_FILES=1 drops the regexes.
GROUPS_TABLE='
credentials|src/auth.rs src/digest.rs src/guard.rs|src/auth.rs:|digest.rs:.*(verify|Nonces::|ReplayGuard|from_hex|DigestResponse::parse)|guard.rs:.*(Throttle|allowed|parse_cidr|client_ip)|--lib --test security --test digest --test secrets --test logging
tenant|src/admin/tokens.rs src/http/admin.rs|admin/tokens.rs:|admin.rs:.*(Admin::|resolve_domain|resolve_user|phone_for_org|find_account)|--lib --test tokens --test admin_rules
validation|src/model/settings.rs src/model/rules.rs src/model/mac.rs src/admin/bulk.rs src/http/admin.rs|settings.rs:|model/rules.rs:|mac.rs:.*(parse|hex_val|from_str)|admin/bulk.rs:|http/admin.rs:.*(check_|account_change|existing_account|read_account_fields|link_account|phone_to_link|seat_member|parse_member|parse_mac|put_phone|edited_phone|read_phone_domain|put_domain|previous_until)|--lib --test admin_rules --test hostile --test cli --test cache
cache|src/cache.rs src/store/mod.rs|cache.rs:.*(valid_at|hot_valid|lookup|etag|Packed::decode|Packed::encode|LastServed)|store/mod.rs:.*(commit|CommitTx|write_domains|write_phones|write_phone|forget_memos|drop_deleted_renders|revision|phones_of_account|phones_in_domain|render_get|render_put)|--lib --test cache --test reload --test admin_rules --test walkthrough
conditional|src/http/phone.rs|phone.rs:.*(etag_matches|respond|server_default_ok|Presented|phone_auth|pair|authenticate|serve_file|serve_phone_file|serve_common_file)|--lib --test conditional --test walkthrough --test security --test digest --test cache --test metrics --test admin_rules
overlay|src/render/overlay.rs src/render/xml.rs|overlay.rs:.*(check_override|key_value|xml_attribute|xml_element|collapse_generated_duplicates|plain_container|last_value_wins|new_element|parse_key|apply)|xml.rs:.*(escape|valid_name|scan_attrs|write|start_elem|Doc::parse)|--lib --test golden --test hostile --test vendors
'

diff_base=""
list=0
groups=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --diff) diff_base=${2:?--diff needs a revision}; shift 2 ;;
        --list) list=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) groups+=("$1"); shift ;;
    esac
done

mapfile -t rows < <(printf '%s\n' "$GROUPS_TABLE" | sed '/^$/d')
if [ "$list" = 1 ]; then
    for row in "${rows[@]}"; do
        printf '%s\n  files: %s\n  functions: %s\n  tests: %s\n' "${row%%|*}" \
            "$(cut -d'|' -f2 <<<"$row")" "$(cut -d'|' -f3- <<<"$row" | sed 's/|--lib.*//')" \
            "--lib${row##*|--lib}"
    done
    exit 0
fi

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "installing cargo-mutants" >&2
    cargo install cargo-mutants --locked >&2 || exit 2
fi

out=target/mutants-out
mkdir -p "$out"
diff_args=()
if [ -n "$diff_base" ]; then
    git diff "$diff_base" -- src/ >"$out/diff.patch" || exit 2
    diff_args=(--in-diff "$out/diff.patch")
fi
place_args=()
[ "${MUTANTS_IN_PLACE:-0}" = 1 ] && place_args=(--in-place)
# In place, the tree must come back exactly as it was (uncommitted work included).
before=$(git diff -- src/ | sha256sum)
deadline=""
[ -n "${MUTANTS_BUDGET:-}" ] && deadline=$(($(date +%s) + MUTANTS_BUDGET))

status=0
for row in "${rows[@]}"; do
    name=${row%%|*}
    rest=${row#*|}
    files=${rest%%|*}
    rest=${rest#*|}
    tests=${rest##*|}
    re=${rest%|*}
    [ "${MUTANTS_WHOLE_FILES:-0}" = 1 ] && re=""
    if [ "${#groups[@]}" -gt 0 ] && [[ ! " ${groups[*]} " == *" $name "* ]]; then
        continue
    fi
    file_args=()
    for f in $files; do file_args+=(-f "$f"); done
    [ -n "$re" ] && file_args+=(--re "$re")
    listed=$(cargo mutants --list "${file_args[@]}" "${diff_args[@]}" 2>"$out/list.err") || {
        cat "$out/list.err" >&2
        exit 2
    }
    count=$(printf '%s' "$listed" | grep -c . || true)
    if [ "$count" = 0 ]; then
        echo "== $name: no mutants${diff_base:+ in the diff since $diff_base}"
        continue
    fi
    left=""
    if [ -n "$deadline" ]; then
        left=$((deadline - $(date +%s)))
        if [ "$left" -le 60 ]; then
            echo "== $name: $count mutant(s) not tested: MUTANTS_BUDGET spent" >&2
            continue
        fi
    fi
    echo "== $name: $count mutant(s) in ${files}; tests: $tests"
    # The test targets go to the build as well (--cargo-arg), so a mutant rebuilds and
    # relinks only the binaries that run.
    target_args=()
    for t in $tests; do target_args+=("--cargo-arg=$t"); done
    cmd=(cargo mutants --no-shuffle --profile "${MUTANTS_PROFILE:-mutants}" --baseline skip --timeout 120
        --output "$out/$name" "${file_args[@]}" "${diff_args[@]}" "${place_args[@]}"
        "${target_args[@]}")
    rc=0
    if [ -n "$left" ]; then
        timeout --signal=INT --kill-after=60 "$left" "${cmd[@]}" || rc=$?
    else
        "${cmd[@]}" || rc=$?
    fi
    report="$out/$name/mutants.out"
    missed=$(cat "$report/missed.txt" 2>/dev/null || true)
    timeouts=$(cat "$report/timeout.txt" 2>/dev/null || true)
    echo "   caught $(grep -c . "$report/caught.txt" 2>/dev/null || echo 0)," \
        "missed $(printf '%s' "$missed" | grep -c . || true)," \
        "timeout $(printf '%s' "$timeouts" | grep -c . || true)," \
        "unviable $(grep -c . "$report/unviable.txt" 2>/dev/null || echo 0)"
    [ -n "$missed" ] && { echo "   SURVIVED:"; printf '     %s\n' "$missed"; status=1; }
    # A mutant that makes the suite hang is detected: the suite never passes with it.
    [ -n "$timeouts" ] && { echo "   timed out (detected: the suite hangs):"; printf '     %s\n' "$timeouts"; }
    case "$rc" in
        0|2|3) ;;
        124) echo "   stopped: MUTANTS_BUDGET spent; the mutants after the last one reported were not tested" >&2 ;;
        *) echo "   cargo mutants exited $rc (see $report/log)" >&2; status=2 ;;
    esac
done

if [ "${MUTANTS_IN_PLACE:-0}" = 1 ] && [ "$(git diff -- src/ | sha256sum)" != "$before" ]; then
    echo "the source tree was left mutated:" >&2
    git diff --stat -- src/ >&2
    exit 2
fi
exit "$status"
