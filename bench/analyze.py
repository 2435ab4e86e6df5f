#!/usr/bin/env python3
"""Turns bench/run.sh's raw data into results.csv, results.md and plots.

    analyze.py RAW_DIR OUT_DIR

RAW_DIR/runN/CANDIDATE/PHASE/ holds, per phase: upgrades.tsv (trigger time,
done time, exit code, one line per upgrade), probe.tsv (one line per probe
request, see probe.c), load.start/load.end, and wrk.out (wrk-series.lua's
totals and 100 ms series) or ab.txt/ab.err/ab.tsv. Standard library only;
plots go through gnuplot when it is installed.
"""
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys

WINDOW_US = 500_000  # "after an upgrade" = the 500 ms after its trigger

CANDIDATE_ORDER = [
    "baton-second", "baton-upgrade", "haproxy", "haproxy-icr", "nginx",
    "tableflip", "reuseport-m0", "reuseport-m1", "stop-start", "lighttpd-baton-run",
]
PHASE_ORDER = ["wrk-control", "wrk", "ab-control", "ab", "noload"]

DESCRIPTION = {
    "baton-second": "baton-httpd; successor = a second copy started with the same --dir",
    "baton-upgrade": "baton-httpd; `baton upgrade DIR` (the owner re-executes itself)",
    "haproxy": "HAProxy master-worker (-W), USR2 reload, listeners passed (-x sockpair@), `expose-fd listeners`",
    "haproxy-icr": "the same + `option idle-close-on-response`",
    "nginx": "nginx binary upgrade: USR2, then WINCH and QUIT to the old master",
    "tableflip": "Go net/http on cloudflare/tableflip, SIGHUP; old process: Server.Shutdown",
    "reuseport-m0": "Go net/http, SO_REUSEPORT: start new, wait 0.2 s, SIGTERM old (Shutdown); tcp_migrate_req=0",
    "reuseport-m1": "the same with net.ipv4.tcp_migrate_req=1",
    "stop-start": "Go net/http, plain: SIGTERM old (Shutdown), wait for exit, start new",
    "lighttpd-baton-run": "lighttpd under `baton run`",
}


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []


def read_int(path):
    lines = read_lines(path)
    try:
        return int(lines[0].strip())
    except (IndexError, ValueError):
        return None


def pct(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def parse_upgrades(d):
    ups = []
    for line in read_lines(os.path.join(d, "upgrades.tsv")):
        parts = line.split("\t")
        if len(parts) == 3:
            ups.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return ups


def parse_probe(d):
    rows = []
    for line in read_lines(os.path.join(d, "probe.tsv")):
        parts = line.split("\t")
        if len(parts) != 6:
            continue
        start, slot, mode, lat, result, ident = parts
        rows.append((int(start), mode, int(lat), result, ident))
    return rows


def parse_wrk(d):
    m = {}
    series = []
    for line in read_lines(os.path.join(d, "wrk.out")):
        parts = line.split()
        if parts and parts[0] == "series" and len(parts) == 4:
            series.append((int(parts[1]) * 1000, int(parts[2]), int(parts[3])))  # us, ok, bad
        elif len(parts) == 2:
            m[parts[0]] = int(parts[1])
    if "requests" not in m:
        return None
    dur = m.get("duration_us", 0) / 1e6
    return {
        "requests": m["requests"],
        "rps": m["requests"] / dur if dur else None,
        "err_connect": m.get("err_connect"),
        "err_read": m.get("err_read"),
        "err_write": m.get("err_write"),
        "err_timeout": m.get("err_timeout"),
        "non2xx": m.get("err_status"),
        "load_p50_ms": m.get("lat_p50_us", 0) / 1000,
        "load_p99_ms": m.get("lat_p99_us", 0) / 1000,
        "load_max_ms": m.get("lat_max_us", 0) / 1000,
        "series": series,
        "bucket_us": 100_000,
    }


def parse_ab(d):
    text = "\n".join(read_lines(os.path.join(d, "ab.txt")))
    err = "\n".join(read_lines(os.path.join(d, "ab.err")))
    both = text + "\n" + err
    rc = read_int(os.path.join(d, "load.rc"))
    r = {}

    def num(pattern, conv=int):
        mm = re.search(pattern, text)
        return conv(mm.group(1)) if mm else None

    r["requests"] = num(r"Complete requests:\s+(\d+)")
    r["rps"] = num(r"Requests per second:\s+([\d.]+)", float)
    r["ab_failed"] = num(r"Failed requests:\s+(\d+)")
    mm = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)", text)
    if mm:
        r["err_connect"], r["err_read"], r["err_length"], r["err_exceptions"] = map(int, mm.groups())
    elif r["ab_failed"] == 0:
        r["err_connect"] = r["err_read"] = r["err_length"] = r["err_exceptions"] = 0
    r["non2xx"] = num(r"Non-2xx responses:\s+(\d+)") or 0
    r["load_p50_ms"] = num(r"\n\s+50%\s+(\d+)", float)
    r["load_p99_ms"] = num(r"\n\s+99%\s+(\d+)", float)
    r["load_max_ms"] = num(r"\n\s+100%\s+(\d+)", float)
    aborted = (rc not in (0, None)) or r["requests"] is None
    r["ab_aborted"] = 1 if aborted else 0
    reason = ""
    if aborted:
        for line in err.splitlines():
            if "apr_" in line or "error" in line.lower():
                reason = line.strip()
                break
        if rc == 124:
            reason = "killed by the harness's time limit"
        mm = re.search(r"Total of (\d+) requests completed", both)
        if mm and r["requests"] is None:
            r["requests"] = int(mm.group(1))
        t0, t1 = read_int(os.path.join(d, "load.start")), read_int(os.path.join(d, "load.end"))
        if t0 and t1:
            r["ab_abort_after_s"] = (t1 - t0) / 1e6
    r["ab_abort_reason"] = reason
    # Per-second completions from -g (request start time, 1 s resolution).
    counts = {}
    lines = read_lines(os.path.join(d, "ab.tsv"))
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) >= 2:
            try:
                s = int(parts[1])
            except ValueError:
                continue
            counts[s] = counts.get(s, 0) + 1
    r["series"] = [(s * 1_000_000, c, 0) for s, c in sorted(counts.items())]
    r["bucket_us"] = 1_000_000
    return r


def in_window(t, triggers):
    return any(tr <= t < tr + WINDOW_US for tr in triggers)


def probe_stats(rows, triggers, t_lo, t_hi):
    """Latency of successful probe requests (ms) in steady state and in the
    500 ms after each trigger, and error counts by kind."""
    steady, after = [], []
    errs = {"f": 0, "k": 0}
    kinds = {}
    for start, mode, lat, result, ident in rows:
        if not (t_lo <= start <= t_hi):
            continue
        ok = result.isdigit() and 200 <= int(result) < 300
        if ok:
            (after if in_window(start, triggers) else steady).append(lat / 1000.0)
        else:
            errs[mode] = errs.get(mode, 0) + 1
            kind = result if not result.isdigit() else "non2xx"
            kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "probe_steady_p50_ms": pct(steady, 50),
        "probe_steady_p99_ms": pct(steady, 99),
        "probe_steady_max_ms": max(steady) if steady else None,
        "probe_after_p50_ms": pct(after, 50),
        "probe_after_p99_ms": pct(after, 99),
        "probe_after_max_ms": max(after) if after else None,
        "probe_requests": len(steady) + len(after) + errs["f"] + errs["k"],
        "probe_errors_fresh": errs["f"],
        "probe_errors_keepalive": errs["k"],
        "probe_error_kinds": " ".join(f"{k}:{v}" for k, v in sorted(kinds.items())),
    }


def switch_times(rows, triggers):
    """Per trigger: ms from the trigger until a fresh-connection probe request
    (started after the trigger) is answered by a process never seen before
    it (None when that did not happen before the next trigger), and the
    window in which fresh-connection requests failed: from the start of the
    first failed one after the trigger to the start of the next one that
    succeeded (0 when none failed)."""
    fresh = sorted((r for r in rows if r[1] == "f"), key=lambda r: r[0])
    out, outage = [], []
    for i, tr in enumerate(triggers):
        limit = triggers[i + 1] if i + 1 < len(triggers) else float("inf")
        seen = set()
        found = None
        fail_start = None
        gap = 0.0
        for start, mode, lat, result, ident in fresh:
            ok = result.isdigit() and 200 <= int(result) < 300
            if start < tr:
                if ok:
                    seen.add(ident)
                continue
            if start >= limit:
                break
            if not ok and fail_start is None:
                fail_start = start
            if ok and fail_start is not None:
                gap += (start - fail_start) / 1000.0
                fail_start = None
            if ok and found is None and ident not in seen and ident != "-":
                found = (start + lat - tr) / 1000.0
        out.append(found)
        outage.append(gap)
    return out, outage


def dip(series, bucket_us, triggers, t_lo, t_hi):
    """Throughput right after each trigger relative to steady state.

    Steady state is the median per-bucket count over the load, less its first
    and last second and the buckets that overlap the 500 ms after a trigger. With 100 ms buckets
    (wrk) "right after" is the 5 buckets from the trigger's; with ab's 1 s
    buckets it is the bucket holding the trigger. Returns (median, worst) of
    the per-upgrade drop in percent (0 = no dip)."""
    if not series or not triggers:
        return None, None
    counts = {t: ok for t, ok, bad in series}
    lo, hi = t_lo + 1_000_000, t_hi - 1_000_000
    first_b = (lo // bucket_us) * bucket_us
    base = []
    b = first_b
    while b + bucket_us <= hi:
        if not any(tr - bucket_us < b < tr + WINDOW_US for tr in triggers):
            base.append(counts.get(b, 0))
        b += bucket_us
    if not base:
        return None, None
    baseline = statistics.median(base)
    if baseline <= 0:
        return None, None
    n = max(1, WINDOW_US // bucket_us)
    drops = []
    for tr in triggers:
        b0 = (tr // bucket_us) * bucket_us
        got = sum(counts.get(b0 + k * bucket_us, 0) for k in range(n)) / n
        drops.append(max(0.0, 100.0 * (1 - got / baseline)))
    return statistics.median(drops), max(drops)


def analyse_phase(d, phase):
    res = {}
    failed = read_lines(os.path.join(d, "failed"))
    if failed:
        return {"failed": failed[0]}
    t_lo = read_int(os.path.join(d, "load.start"))
    t_hi = read_int(os.path.join(d, "load.end"))
    if t_lo is None or t_hi is None:
        return {"failed": "incomplete"}
    ups = parse_upgrades(d)
    triggers = [u[0] for u in ups]
    res["upgrades_done"] = sum(1 for u in ups if u[2] == 0)
    res["upgrades_failed"] = sum(1 for u in ups if u[2] != 0)
    res["upgrade_cmd_median_ms"] = statistics.median([(u[1] - u[0]) / 1000 for u in ups]) if ups else None
    res["upgrade_retries"] = sum(1 for line in read_lines(os.path.join(d, "upgrade.log")) if "sent again" in line)
    rows = parse_probe(d)
    res.update(probe_stats(rows, triggers, t_lo, t_hi))
    sw, outage = switch_times(rows, triggers)
    res["fresh_fail_median_ms"] = statistics.median(outage) if outage else None
    res["fresh_fail_max_ms"] = max(outage) if outage else None
    got = [x for x in sw if x is not None]
    res["switch_median_ms"] = statistics.median(got) if got else None
    res["switch_max_ms"] = max(got) if got else None
    res["switch_missed"] = sum(1 for x in sw if x is None) if sw else None
    load = None
    if phase.startswith("wrk"):
        load = parse_wrk(d)
    elif phase.startswith("ab"):
        load = parse_ab(d)
    if load:
        series = load.pop("series")
        bucket = load.pop("bucket_us")
        res.update(load)
        res["dip_median_pct"], res["dip_worst_pct"] = dip(series, bucket, triggers, t_lo, t_hi)
        res["_series"] = (series, bucket)
    res["_triggers"] = triggers
    res["_t0"] = t_lo
    res["_t1"] = t_hi
    res["_probe"] = rows
    return res


NUMERIC = [
    "requests", "rps", "err_connect", "err_read", "err_write", "err_timeout", "non2xx",
    "ab_failed", "err_length", "err_exceptions",
    "load_p50_ms", "load_p99_ms", "load_max_ms",
    "probe_steady_p50_ms", "probe_steady_p99_ms", "probe_steady_max_ms",
    "probe_after_p50_ms", "probe_after_p99_ms", "probe_after_max_ms",
    "probe_requests", "probe_errors_fresh", "probe_errors_keepalive",
    "dip_median_pct", "dip_worst_pct",
    "switch_median_ms", "switch_max_ms", "switch_missed", "fresh_fail_median_ms", "fresh_fail_max_ms",
    "ab_abort_after_s",
    "upgrades_done", "upgrades_failed", "upgrade_retries", "upgrade_cmd_median_ms",
]
# Counted over all runs rather than a median: a rare failure must show.
SUMMED = {"upgrades_done", "upgrades_failed", "upgrade_retries", "switch_missed"}
CSV_COLUMNS = ["candidate", "load", "runs", "failed_runs"] + NUMERIC + [
    "ab_aborted_runs", "ab_abort_reasons", "probe_error_kinds"]


def median_or_none(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def aggregate(per_run):
    ok = [r for r in per_run if "failed" not in r]
    agg = {"runs": len(per_run), "failed_runs": len(per_run) - len(ok)}
    for k in NUMERIC:
        if k in SUMMED:
            vals = [r.get(k) for r in ok if r.get(k) is not None]
            agg[k] = sum(vals) if vals else None
        else:
            agg[k] = median_or_none([r.get(k) for r in ok])
    if any("ab_aborted" in r for r in ok):
        agg["ab_aborted_runs"] = sum(r.get("ab_aborted", 0) for r in ok)
        agg["ab_abort_reasons"] = "; ".join(sorted({r["ab_abort_reason"] for r in ok if r.get("ab_abort_reason")}))
    agg["probe_error_kinds"] = " | ".join(r.get("probe_error_kinds", "") for r in ok)
    agg["fail_reasons"] = "; ".join(sorted({r["failed"] for r in per_run if "failed" in r}))
    return agg


def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float):
        if digits == 0:
            return f"{v:,.0f}"
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def ms(v):
    if v is None:
        return "–"
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def trio(a, key):
    return "/".join(ms(a.get(f"{key}_{p}_ms")) for p in ("p50", "p99", "max"))


def write_csv(path, table):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for (cand, phase), a in table:
            row = [cand, phase]
            for c in CSV_COLUMNS[2:]:
                v = a.get(c)
                if isinstance(v, float):
                    v = round(v, 2)
                row.append("" if v is None else v)
            w.writerow(row)


def errors_wrk(a):
    return "/".join(fmt(a.get(k)) for k in ("err_connect", "err_read", "err_write", "err_timeout", "non2xx"))


def errors_ab(a):
    return "/".join(fmt(a.get(k)) for k in ("err_connect", "err_read", "err_length", "err_exceptions", "non2xx"))


def label(cand, phase):
    return f"{cand} (control)" if phase.endswith("-control") else cand


def write_md(path, table, meta, skipped, runs):
    by = dict(table)
    L = []
    L.append("# baton and its peers under repeated upgrades")
    L.append("")
    L.append("Generated by `make bench` (bench/run.sh, bench/analyze.py); the method is in bench/README.md.")
    L.append("")
    L.append(
        f"Machine: {meta.get('nproc', '?')} cores shared by server, load and probe, Linux {meta.get('kernel', '?')}; "
        f"wrk {meta.get('wrk', '?')}, ab {meta.get('ab', '?')}, HAProxy {meta.get('haproxy', '?')}, "
        f"nginx {meta.get('nginx', '?')}, {meta.get('go', '?')}, tableflip {meta.get('tableflip', '?')}. "
        f"{meta.get('seconds', '?')} s of load per phase, {meta.get('upgrades', '?')} upgrades per phase about "
        f"1 s apart (closer in short runs), {runs} run(s); every figure is the median over the runs "
        f"(date {meta.get('date', '?')}).")
    L.append("")
    n_up = meta.get("upgrades", "?")

    def table_for(load, errors_fn, err_head, extra_head=None, extra_fn=None):
        phases = [load + "-control", load]
        head = ["candidate", "requests", "req/s", err_head,
                f"{load} latency p50/p99/max ms (whole run)",
                "probe latency, steady p50/p99/max ms", "probe latency, 500 ms after upgrade p50/p99/max ms",
                "probe errors fresh/keep-alive", "req/s dip after upgrade, median/worst %",
                "trigger → new process answers, median/max ms",
                "fresh connections failing, median/max ms per upgrade",
                "upgrades done/failed, all runs"]
        if extra_head:
            head.append(extra_head)
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for cand in CANDIDATE_ORDER:
            for ph in phases:
                a = by.get((cand, ph))
                if a is None:
                    continue
                if a["failed_runs"] == a["runs"]:
                    L.append(f"| {label(cand, ph)} | failed: {a.get('fail_reasons', '')} |" + " |" * (len(head) - 2))
                    continue
                control = ph.endswith("-control")
                cells = [label(cand, ph), fmt(a.get("requests")), fmt(a.get("rps")), errors_fn(a),
                         trio(a, "load"), trio(a, "probe_steady"),
                         "–" if control else trio(a, "probe_after"),
                         f"{fmt(a.get('probe_errors_fresh'))}/{fmt(a.get('probe_errors_keepalive'))}",
                         "–" if control else f"{fmt(a.get('dip_median_pct'))}/{fmt(a.get('dip_worst_pct'))}",
                         "–" if control else f"{ms(a.get('switch_median_ms'))}/{ms(a.get('switch_max_ms'))}",
                         "–" if control else f"{ms(a.get('fresh_fail_median_ms'))}/{ms(a.get('fresh_fail_max_ms'))}",
                         "–" if control else f"{fmt(a.get('upgrades_done'))}/{fmt(a.get('upgrades_failed'))}"]
                if extra_fn:
                    cells.append(extra_fn(a))
                if a["failed_runs"]:
                    cells[0] += f" ({a['failed_runs']} of {a['runs']} runs failed)"
                L.append("| " + " | ".join(cells) + " |")
        L.append("")

    loads = {ph for ((_, ph), _a) in table}
    if "wrk" in loads:
        L.append(f"## wrk: 2 threads, {meta.get('wrk_conns', 200)} keep-alive connections")
        L.append("")
        table_for("wrk", errors_wrk, "errors connect/read/write/timeout/non-2xx")
    if "ab" in loads:
        L.append(f"## ab: {meta.get('ab_conc', 1000)} concurrent, a fresh connection per request, "
                 f"-n {meta.get('ab_requests', 200000)} bounded by -t {meta.get('seconds', '?')}")
        L.append("")

        def aborted(a):
            n = a.get("ab_aborted_runs") or 0
            if not n:
                return "no"
            why = a.get("ab_abort_reasons") or ""
            after = a.get("ab_abort_after_s")
            return (f"{n} of {a['runs'] - a['failed_runs']} runs"
                    + (f", after {after:.1f} s" if after is not None else "")
                    + (f" ({why})" if why else ""))
        table_for("ab", errors_ab, "failed connect/receive/length/exceptions, non-2xx", "ab aborted", aborted)
        only_length = [c for (c, ph), a in table if ph == "ab" and c.startswith("baton") and (a.get("err_length") or 0) > 0
                       and not (a.get("err_connect") or a.get("err_read") or a.get("err_exceptions") or a.get("non2xx"))]
        if only_length:
            L.append(f"In the {', '.join(only_length)} row(s) every ab failure is of the Length kind: baton-httpd's body "
                     "(`pid P generation G`) changed length with the generation or pid before it was zero-padded to a fixed "
                     "34 bytes, and ab counts every response "
                     "whose length differs from the first one's as failed. Those requests were answered with 200; "
                     "see \"ab's Length failures\" below.")
            L.append("")
    if "noload" in loads:
        L.append("## No load: the probe alone")
        L.append("")
        L.append("| candidate | trigger → new process answers, median/max ms | upgrades not seen by the probe, all runs | "
                 "probe errors fresh/keep-alive | fresh connections failing, median/max ms per upgrade | "
                 "upgrade command, median ms | upgrades done/failed, all runs |")
        L.append("|---|---|---|---|---|---|---|")
        for cand in CANDIDATE_ORDER:
            a = by.get((cand, "noload"))
            if a is None:
                continue
            if a["failed_runs"] == a["runs"]:
                L.append(f"| {cand} | failed: {a.get('fail_reasons', '')} | | | | | |")
                continue
            L.append(f"| {cand} | {ms(a.get('switch_median_ms'))}/{ms(a.get('switch_max_ms'))} | "
                     f"{fmt(a.get('switch_missed'))} | {fmt(a.get('probe_errors_fresh'))}/"
                     f"{fmt(a.get('probe_errors_keepalive'))} | "
                     f"{ms(a.get('fresh_fail_median_ms'))}/{ms(a.get('fresh_fail_max_ms'))} | "
                     f"{ms(a.get('upgrade_cmd_median_ms'))} | "
                     f"{fmt(a.get('upgrades_done'))}/{fmt(a.get('upgrades_failed'))} |")
        L.append("")
    if skipped:
        L.append("Skipped: " + "; ".join(f"{c} ({why})" for c, why in skipped) + ".")
        L.append("")
    if os.path.exists(os.path.join(os.path.dirname(path), "results-wrk.png")):
        L.append("![wrk requests/s and probe errors over time](results-wrk.png)")
        L.append("")
    if os.path.exists(os.path.join(os.path.dirname(path), "results-ab.png")):
        L.append("![ab completions/s and probe errors over time](results-ab.png)")
        L.append("")
    hp = os.path.join(os.path.dirname(path), "takeover.txt")
    if os.path.exists(hp):
        L.append("## baton-bench-takeover (bench/takeover.c), same session")
        L.append("")
        L.append("```")
        L.extend(read_lines(hp))
        L.append("```")
        L.append("")
    L.append(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results-notes.md")).read().rstrip())
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def plot(out_dir, phase_results, load, name):
    """One panel per candidate: load throughput per second, probe errors per
    100 ms, upgrade triggers as vertical lines. Data from the run with the
    median request count (a time series has no median)."""
    if not shutil.which("gnuplot"):
        return False
    cands = [c for c in CANDIDATE_ORDER if (c, load) in phase_results and "_series" in phase_results[(c, load)]]
    if not cands:
        return False
    tmp = os.path.join(out_dir, f".plot-{load}")
    os.makedirs(tmp, exist_ok=True)
    cmds = []
    rows = (len(cands) + 1) // 2
    cmds.append(f"set terminal pngcairo size 1400,{300 * rows} font 'sans,9'")
    cmds.append(f"set output '{os.path.join(out_dir, name)}'")
    cmds.append(f"set multiplot layout {rows},2 title "
                f"'{load}: requests/s (left axis) and probe errors (right axis) over time; dashed = upgrade trigger "
                f"(per candidate, the run with the median request count)'")
    cmds.append("set xlabel 's since load start'")
    cmds.append("set ylabel 'req/s'")
    cmds.append("set y2label 'probe errors'")
    cmds.append("set ytics nomirror; set y2tics; set yrange [0:*]; set y2range [0:*]")
    cmds.append("set key outside bottom center horizontal font ',8'")
    for c in cands:
        r = phase_results[(c, load)]
        series, bucket = r["_series"]
        t0 = r["_t0"]
        scale = 1_000_000 / bucket
        sf = os.path.join(tmp, f"{c}.series")
        # Buckets with no response at all are missing from the series: draw
        # them as 0 rather than a line across the gap.
        if series:
            have = {t: (okc, bad) for t, okc, bad in series}
            lo_b, hi_b = series[0][0], series[-1][0]
            series = [(b, *have.get(b, (0, 0))) for b in range(lo_b, hi_b + bucket, bucket)]
        with open(sf, "w") as f:
            for t, okc, bad in series:
                x = (t - t0) / 1e6
                if -1 <= x <= (r["_t1"] - t0) / 1e6 + 1:
                    f.write(f"{x:.2f}\t{okc * scale:.0f}\t{bad * scale:.0f}\n")
        ef = os.path.join(tmp, f"{c}.errors")
        eb = {}
        for start, mode, lat, result, ident in r["_probe"]:
            if result.isdigit() and 200 <= int(result) < 300:
                continue
            b = (start - t0) // 100_000
            eb[b] = eb.get(b, 0) + 1
        with open(ef, "w") as f:
            f.write("0\t0\n")
            for b in sorted(eb):
                f.write(f"{b / 10:.1f}\t{eb[b]}\n")
        cmds.append("unset arrow")
        for tr in r["_triggers"]:
            x = (tr - t0) / 1e6
            cmds.append(f"set arrow from {x:.3f}, graph 0 to {x:.3f}, graph 1 nohead dt 2 lc rgb '#888888'")
        x_hi = (max([r["_t1"]] + r["_triggers"]) - t0) / 1e6 + 0.5
        cmds.append(f"set xrange [-0.5:{x_hi:.1f}]")
        cmds.append(f"set title '{c}'")
        errplot = f"'{ef}' using 1:2 axes x1y2 with impulses lw 2 lc rgb '#d62728' title 'probe errors per 100 ms'"
        if series:
            cmds.append("unset label")
            cmds.append(f"plot '{sf}' using 1:2 with lines lc rgb '#1f77b4' title 'req/s (2xx)', "
                        f"'{sf}' using 1:3 with lines lc rgb '#ff7f0e' title 'non-2xx/s', " + errplot)
        else:
            cmds.append("set label 1 'no throughput series (the load tool aborted)' at graph 0.3, graph 0.5")
            cmds.append("plot " + errplot)
    cmds.append("unset multiplot")
    script = os.path.join(tmp, "plot.gp")
    with open(script, "w") as f:
        f.write("\n".join(cmds) + "\n")
    proc = subprocess.run(["gnuplot", script], stderr=subprocess.PIPE, text=True)
    ok = proc.returncode == 0
    if not ok:
        sys.stderr.write(proc.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return ok


def main():
    raw, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    meta = {}
    for line in read_lines(os.path.join(raw, "meta.txt")):
        k, _, v = line.partition(" ")
        meta[k] = v
    skipped = [tuple(line.split("\t", 1)) for line in read_lines(os.path.join(raw, "skipped.tsv")) if "\t" in line]
    runs = sorted(int(d[3:]) for d in os.listdir(raw) if d.startswith("run") and d[3:].isdigit())
    collected = {}
    for n in runs:
        rd = os.path.join(raw, f"run{n}")
        for cand in os.listdir(rd):
            for phase in os.listdir(os.path.join(rd, cand)):
                r = analyse_phase(os.path.join(rd, cand, phase), phase)
                collected.setdefault((cand, phase), []).append(r)

    def order(key):
        c, p = key
        return (CANDIDATE_ORDER.index(c) if c in CANDIDATE_ORDER else 99,
                PHASE_ORDER.index(p) if p in PHASE_ORDER else 99)
    table = [(k, aggregate(collected[k])) for k in sorted(collected, key=order)]
    # Plot, per candidate and load, the run with the median request count: a
    # typical run rather than whichever came first.
    typical = {}
    for k, rs in collected.items():
        good = [r for r in rs if "failed" not in r]
        if not good:
            continue
        good.sort(key=lambda r: r.get("requests") or 0)
        typical[k] = good[(len(good) - 1) // 2]
    write_csv(os.path.join(out, "results.csv"), table)
    for old in ("results-wrk.png", "results-ab.png"):
        if os.path.exists(os.path.join(out, old)):
            os.remove(os.path.join(out, old))
    plot(out, typical, "wrk", "results-wrk.png")
    plot(out, typical, "ab", "results-ab.png")
    write_md(os.path.join(out, "results.md"), table, meta, skipped, len(runs))


if __name__ == "__main__":
    main()
