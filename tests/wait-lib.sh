# shellcheck shell=bash
# Sourced by the shell tests that watch programs nobody here wrote
# (quic-upgrade.sh, run-quic.sh, run-udp-steer.sh).

# Wait until a condition holds, polling what the programs wrote; bounded
# (SECONDS). Not a sleep in place of synchronisation: each check reads
# what a program said it did. 0 once it holds, 1 at the bound.
wait_for() { # wait_for SECONDS COMMAND...
    local n=$(($1 * 20))
    shift
    while ! "$@"; do
        n=$((n - 1))
        [ $n -gt 0 ] || return 1
        sleep 0.05
    done
}

# The lines of FILES matching PATTERN, 0 when none (or no file).
count() { # count PATTERN FILES...
    local p=$1 n
    shift
    n=$(cat "$@" 2>/dev/null | grep -c "$p")
    echo "${n:-0}"
}
