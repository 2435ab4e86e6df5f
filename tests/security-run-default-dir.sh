#!/usr/bin/env bash
# `baton run` without --dir, as a user without XDG_RUNTIME_DIR, keeps its
# directories under $TMPDIR/baton-UID. Another user who made that first
# (mode 0777) could swap our directory for one of theirs, so baton run must
# refuse it, naming it, its owner and its mode, and start nothing; likewise
# one that is ours but writable by others. One that is ours and private is
# used. TMPDIR is a directory of the test's own, sticky and world-writable
# like /tmp. Needs root (to act as two other users) and setpriv.
#
#   security-run-default-dir.sh BUILD_DIR
set -u
BUILD=$1
BATON=$BUILD/bin/baton
VICTIM=65533
ATTACKER=65534
NAME=security-run-default-dir

say() { echo "$NAME: $*"; }
[[ $(id -u) == 0 ]] || { say "SKIP: needs root"; exit 77; }
command -v setpriv >/dev/null || { say "SKIP: no setpriv"; exit 77; }

base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
chmod 1777 "$base"
as() {
    local uid=$1
    shift
    setpriv --reuid="$uid" --regid="$uid" --clear-groups env -u XDG_RUNTIME_DIR TMPDIR="$base" "$@"
}
# The build may sit in a directory only root can enter (a clone under
# mktemp -d): then the other users run a copy of the tool and the shim,
# laid out as bin/ and lib/ are, from a directory of the test's own.
if ! as $VICTIM test -x "$BATON"; then
    mkdir -m 0755 "$base/tree" "$base/tree/bin" "$base/tree/lib"
    cp "$BATON" "$base/tree/bin/" && cp -P "$BUILD"/lib/libbaton-preload.so* "$base/tree/lib/" ||
        { say "FAIL: copying the tool for the other users"; exit 1; }
    BATON=$base/tree/bin/baton
    as $VICTIM test -x "$BATON" || { say "FAIL: uid $VICTIM cannot run $BATON"; exit 1; }
fi
marker=$base/ran
target=$base/baton-$VICTIM
fails=0

# $1: what; the rest: the command baton run must refuse.
expect_refused() {
    local what=$1 out rc
    rm -f "$marker"
    out=$(as $VICTIM "$BATON" run -- sh -c "touch $marker" 2>&1)
    rc=$?
    if [[ $rc != 1 ]]; then
        say "FAIL: $what: exit status $rc, expected 1 ($out)"
        fails=$((fails + 1))
    elif [[ -e $marker ]]; then
        say "FAIL: $what: the program ran"
        fails=$((fails + 1))
    elif [[ $out != *"$target"*"uid $2"*"mode $3"* ]]; then
        say "FAIL: $what: the message does not name the directory, its owner and mode: $out"
        fails=$((fails + 1))
    else
        say "ok: $what: $out"
    fi
}

# Another user made it first, open to all.
as $ATTACKER mkdir -m 0777 "$target"
as $ATTACKER chmod 0777 "$target"
expect_refused "made by uid $ATTACKER" $ATTACKER 777
rmdir "$target"

# Ours, but writable by others.
as $VICTIM mkdir -m 0700 "$target"
chmod 0777 "$target"
expect_refused "ours but mode 0777" $VICTIM 777
rmdir "$target"

# A symbolic link in its place is not followed.
as $ATTACKER ln -s "$base" "$target"
rm -f "$marker"
out=$(as $VICTIM "$BATON" run -- sh -c "touch $marker" 2>&1)
rc=$?
if [[ $rc != 1 || -e $marker ]]; then
    say "FAIL: a symbolic link at $target: exit status $rc, expected 1 and nothing run ($out)"
    fails=$((fails + 1))
else
    say "ok: a symbolic link at $target is refused"
fi
rm -f "$target"

# Ours and private (made by baton run itself): the program runs.
rm -f "$marker"
out=$(as $VICTIM "$BATON" run -- sh -c "touch $marker" 2>&1)
rc=$?
if [[ $rc != 0 || ! -e $marker ]]; then
    say "FAIL: a private directory of our own: exit status $rc ($out)"
    fails=$((fails + 1))
elif [[ $(stat -c '%u %a' "$target") != "$VICTIM 700" ]]; then
    say "FAIL: $target is $(stat -c '%u %a' "$target"), expected $VICTIM 700"
    fails=$((fails + 1))
else
    say "ok: a private directory of our own is used"
fi

[[ $fails == 0 ]] || exit 1
say "PASS"
