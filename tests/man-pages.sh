#!/bin/sh
# man-pages.sh SOURCE_DIR - the section 3 man pages say what the headers say.
#
# Every function declared in include/baton.h and include/baton-session.h
# has man/NAME.3 (a page of its own or a one-line ".so man3/OTHER.3" link),
# and the page it leads to names the function in NAME, includes the right
# header and shows the function's prototype exactly as the header declares
# it (compared with whitespace normalised). Every baton page named in a SEE
# ALSO section of a man/*.3 exists in man/, and every man/*.3 is free of
# groff warnings (groff -man -ww -z -t). Needs no network and no build.
#
# Exit 0 pass, 1 fail, 77 when everything else passed but groff is missing
# (scripts/deps.sh installs groff-base).
set -u
src=${1:-.}
man=$src/man
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# NAME<TAB>HEADER<TAB>PROTOTYPE for every function a header declares:
# comments and preprocessor lines dropped, then every ';'-terminated
# declaration whose last brace-free part is "TYPE baton_NAME(ARGS)".
for h in baton.h baton-session.h; do
    if [ ! -f "$src/include/$h" ]; then
        echo "FAIL: include/$h missing"
        exit 1
    fi
    sed -e '/^[[:space:]]*#/d' "$src/include/$h" |
        awk 'BEGIN { RS = "\001" } { gsub(/\/\*([^*]|\*+[^*\/])*\*+\//, " "); print }' |
        tr '\n\t' '  ' | tr ';' '\n' | sed -e 's/.*[{}]//' |
        sed -n -e "s/^ *\(.*[ *]\(baton_[a-z_]*\) *(.*)\) *\$/\2	$h	\1/p"
done >"$tmp/protos"

ls "$man" >"$tmp/files"

# One pass over the prototypes and every page.
awk -v files="$tmp/files" '
function norm(s) {
    gsub(/[ \t\n]+/, " ", s); sub(/^ /, "", s); sub(/ $/, "", s)
    gsub(/\( /, "(", s); gsub(/ \)/, ")", s); gsub(/ ,/, ",", s); gsub(/\* /, "*", s)
    return s
}
function bad(msg) { print "FAIL: " msg; fail = 1 }
# The text of a font macro line: .B and .I join their arguments with
# blanks, the alternating ones (.BI, .BR, ...) without.
function macro_text(line,    m, s, out, i) {
    m = line; sub(/ .*/, "", m); s = line; sub(/^\.[A-Z]+ */, "", s)
    if (m == ".B" || m == ".I") { gsub(/"/, "", s); out = s; s = "" }
    else out = ""
    while (length(s) > 0) {
        if (substr(s, 1, 1) == "\"") {
            s = substr(s, 2); i = index(s, "\"")
            if (i == 0) { out = out s; s = "" } else { out = out substr(s, 1, i - 1); s = substr(s, i + 1) }
        } else if (substr(s, 1, 1) == " ") {
            s = substr(s, 2)
        } else {
            i = index(s, " ")
            if (i == 0) { out = out s; s = "" } else { out = out substr(s, 1, i - 1); s = substr(s, i) }
        }
    }
    gsub(/\\-/, "-", out); gsub(/\\e/, "\\", out); gsub(/\\&/, "", out)
    return out
}
BEGIN { while ((getline f < files) > 0) exists[f] = 1 }
FILENAME ~ /protos$/ {
    split($0, a, "\t"); n++; fname[n] = a[1]; fhdr[n] = a[2]; fproto[n] = a[3]
    next
}
FNR == 1 {
    page = FILENAME; sub(/.*\//, "", page); sect = ""
    if ($0 ~ /^\.so +man[0-9]\/[^ ]+$/) { t = $2; sub(/.*\//, "", t); link[page] = t }
}
/^\.SH/ { sect = $0; sub(/^\.SH +/, "", sect); gsub(/"/, "", sect); next }
sect == "NAME" { names[page] = names[page] " " $0 }
sect == "SYNOPSIS" {
    if ($0 ~ /^\.(B|I|BI|IB|BR|RB|IR|RI)( |$)/) t = macro_text($0)
    else if ($0 ~ /^\./) next
    else t = $0
    if (t ~ /^ *#/) incl[page] = incl[page] "|" norm(t) "|"
    else syn[page] = syn[page] " " t
}
sect == "SEE ALSO" {
    t = $0; gsub(/\\-/, "-", t)
    while (match(t, /baton[A-Za-z0-9_-]* *\([1-9]\)/)) {
        r = substr(t, RSTART, RLENGTH); t = substr(t, RSTART + RLENGTH)
        gsub(/[ )]/, "", r); sub(/\(/, ".", r)
        if (!(r in exists)) bad(page ": SEE ALSO names " r ", which is not in man/")
    }
}
END {
    if (n < 40) bad("only " n " functions found in the headers (parser broken?)")
    for (i = 1; i <= n; i++) {
        name = fname[i]; p = name ".3"
        if (!(p in exists)) { bad(name ": no man/" p); continue }
        for (hops = 0; (p in link) && hops < 4; hops++) p = link[p]
        if (!(p in exists)) { bad(name ": man/" name ".3 leads to " p ", which is not in man/"); continue }
        if (names[p] !~ ("(^|[^A-Za-z0-9_])" name "([^A-Za-z0-9_]|$)"))
            bad(name ": not in the NAME section of man/" p)
        if (index(incl[p], "|#include <" fhdr[i] ">|") == 0)
            bad(name ": man/" p " does not show #include <" fhdr[i] ">")
        want = norm(fproto[i]); got = ""
        k = split(norm(syn[p]), st, ";")
        for (j = 1; j <= k; j++)
            if (st[j] ~ ("[ *]" name " ?\\(")) { got = norm(st[j]); break }
        if (got == "")
            bad(name ": no prototype in the SYNOPSIS of man/" p)
        else if (got != want)
            bad(name ": prototype in man/" p " differs from include/" fhdr[i] \
                "\n  header: " want "\n  page:   " got)
    }
    if (!fail) print "man-pages: " n " functions, each with its page and prototype"
    exit fail
}' "$tmp/protos" "$man"/*.3
fail=$?

# groff: no warnings. Link pages are checked through their target.
pages=""
for p in "$man"/*.3; do
    if grep -q '^\.so ' "$p"; then
        [ "$(wc -l <"$p")" -eq 1 ] || { echo "FAIL: $p: a .so link must be one line"; fail=1; }
    else
        pages="$pages $p"
    fi
done
if command -v groff >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    out=$(LC_ALL=C groff -man -ww -z -t $pages 2>&1)
    if [ -n "$out" ]; then
        echo "FAIL: groff warns:"
        echo "$out"
        fail=1
    fi
else
    echo "man-pages: groff not found, pages not checked for warnings" \
        "(scripts/deps.sh installs groff-base)"
    [ "$fail" -eq 0 ] && exit 77
fi
exit "$fail"
