#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/pause-standby.sh BUILD [RUNS] [UPGRADES]
#
# baton-bench-pause without and with --standby (BATON_STANDBY), alternated
# RUNS times (default 5) with UPGRADES upgrades each (default 20), on the
# same machine in the same minutes. Prints, per row of interest, the median
# over the runs of each run's median and maximum, and the largest maximum
# of all runs, for both modes, beside the bare exec of the same binary
# measured in the same runs. The last run
# of each mode is kept in bench/results/pause.txt and pause-standby.txt,
# the summary in bench/results/pause-standby-summary.txt.
set -euo pipefail

BUILD=${1:?usage: pause-standby.sh BUILD [RUNS] [UPGRADES]}
RUNS=${2:-5}
UPGRADES=${3:-20}
BIN=$BUILD/bin
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

for ((i = 1; i <= RUNS; i++)); do
    for mode in plain standby; do
        flag=()
        [[ $mode == standby ]] && flag=(--standby)
        echo "pause-standby: run $i/$RUNS, $mode" >&2
        if ! timeout -k 5 300 "$BIN/baton-bench-pause" --upgrades "$UPGRADES" "${flag[@]}" \
            >"$OUT/$mode.$i" 2>&1; then
            echo "pause-standby: baton-bench-pause ${flag[*]} failed:" >&2
            tail -n 5 "$OUT/$mode.$i" >&2
            exit 1
        fi
    done
done
grep -v 'coordination dir in' "$OUT/plain.$RUNS" >"$HERE/results/pause.txt"
grep -v 'coordination dir in' "$OUT/standby.$RUNS" >"$HERE/results/pause-standby.txt"

python3 - "$OUT" "$RUNS" "$UPGRADES" <<'PY' | tee "$HERE/results/pause-standby-summary.txt"
import statistics, sys
out, runs, upgrades = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [
    ("longest wait for a reply, unix", "longest wait for one reply (unix)"),
    ("longest wait for a reply, tcp", "longest wait for one reply (tcp)"),
    ("longest wait for a reply, sighup", "  ... of SIGHUP upgrades (either)"),
    ("longest wait for a reply, tool", "  ... of baton upgrade (either)"),
    ("longest wait for a reply, copy", "  ... of a copy by hand (either)"),
    ("bare exec of baton-echo", "bare exec of baton-echo"),
    ("trigger to first answer, sighup", "trigger -> answer, SIGHUP"),
    ("trigger to first answer, tool", "trigger -> answer, baton upgrade"),
    ("trigger to first answer, copy", "trigger -> answer, copy by hand"),
    ("trigger to serving, sighup", "trigger -> serving (its stamp), SIGHUP"),
    ("trigger -> successor's main(), sighup", "  SIGHUP: trigger -> successor's main()"),
    ("main() -> baton_open() returned, sighup", "  SIGHUP: main() -> baton_open() returned"),
    ("baton_open() -> baton_ready(), sighup", "  SIGHUP: baton_open() -> baton_ready()"),
]
def figures(path):
    got = {}
    for line in open(path):
        for key, _ in rows:
            if line.strip().startswith(key):
                f = line.split()
                got[key] = (float(f[-2]), float(f[-1]))
    return got
runs_of = {m: [figures(f"{out}/{m}.{i}") for i in range(1, runs + 1)] for m in ("plain", "standby")}
print(f"baton-bench-pause, {runs} runs of each mode alternated, {upgrades} upgrades each; ms: the median "
      "over the runs of each run's median [and of each run's maximum; the largest maximum]")
print(f"  {'':40} {'plain':>21} {'--standby':>21}")
for key, label in rows:
    cells = []
    for m in ("plain", "standby"):
        med = [r[key][0] for r in runs_of[m] if key in r]
        mx = [r[key][1] for r in runs_of[m] if key in r]
        cells.append(f"{statistics.median(med):5.2f} [{statistics.median(mx):5.2f};{max(mx):6.2f}]"
                     if med else "-")
    print(f"  {label:40} {cells[0]:>21} {cells[1]:>21}")
PY
