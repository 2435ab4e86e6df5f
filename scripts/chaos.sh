#!/bin/sh
# chaos.sh BUILD_DIR [ROUNDS] - the long chaos run: ROUNDS (default 1000)
# upgrades under load, each with one fault injected (a BATON_FAULT step of
# the successor or the owner, killed or stopped, or a signal at a random
# moment), with the checks of tests/chaos-upgrade.c after every round.
#
# Runs BUILD_DIR/tests/test-chaos-upgrade (any build: the sanitizer tree
# catches more, a release tree runs more rounds a minute). The seed is
# CHAOS_SEED, or the time; it is printed so that a failure can be re-run.
# CHAOS_SKIP="point,..." leaves injection points out (e.g. one known
# broken, to see what else breaks); CHAOS_VERBOSE=1 prints every round.
#
# Prints the summary of outcomes per injection point (successor serves,
# owner serves on, nobody then a fresh start, split brain, and the client's
# requests: ok, refused, reset, timed out) and every PROBLEM found, and
# exits with the test's status: 0 when every round held.

BUILD=${1:-build}
ROUNDS=${2:-1000}
SEED=${CHAOS_SEED:-$(date +%s)}
TEST=$BUILD/tests/test-chaos-upgrade

if [ ! -x "$TEST" ]; then
    echo "chaos: $TEST is missing (build the tests first)" >&2
    exit 2
fi
OUT=$(mktemp "${TMPDIR:-/tmp}/baton-chaos.XXXXXX") || exit 1
trap 'rm -f "$OUT"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "chaos: $ROUNDS rounds, seed $SEED"
# About a second a round under ASan; the bound is generous.
timeout $((ROUNDS * 5 + 60)) "$TEST" "$ROUNDS" "$SEED" >"$OUT" 2>&1
status=$?
grep -E '^chaos:' "$OUT"
grep -E 'PROBLEM|FAIL|ERROR: (Address|Leak|Undefined)|runtime error' "$OUT" | head -n 50
if [ "$status" -ne 0 ]; then
    echo "chaos: FAILED (status $status); the last lines:"
    tail -n 20 "$OUT"
fi
exit "$status"
