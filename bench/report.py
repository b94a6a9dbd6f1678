#!/usr/bin/env python3
"""Turns a bench results JSON (bench/harness.py) into Markdown tables and puts them into
docs/benchmarks.md between the `<!-- bench:results -->` markers (the rest of the file is
left alone). Standard library only.

    bench/report.py RESULTS.json [docs/benchmarks.md]
"""

import json
import statistics
import sys
from pathlib import Path

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

# Per-row targets: (workload, tool) -> (text, check on the row's median ratio tool/lifeboat)
ROW_TARGETS = {
    ("W1", "pyinfra"): ("lifeboat ≥ 7× faster", lambda r: r >= 7),
    ("W1", "ansible"): ("lifeboat ≥ 50× faster", lambda r: r >= 50),
    ("W2@50", "pyinfra"): ("lifeboat ≥ 2.5× faster", lambda r: r >= 2.5),
    # lifeboat must reach 90% of scp's throughput: scp's time / lifeboat's time ≥ 0.9
    ("W4-small", "scp"): ("lifeboat ≥ 90% of scp's throughput", lambda r: r >= 0.9),
    ("W4-big", "scp"): ("lifeboat ≥ 90% of scp's throughput", lambda r: r >= 0.9),
}
TOOL_NAMES = {
    "lifeboat": "lifeboat",
    "lifeboat-tmpfs": "lifeboat, journal on tmpfs",
    "floor": "floor (russh, no engine)",
    "pyinfra": "pyinfra",
    "ansible": "ansible-playbook",
    "scp": "scp",
    "rsync": "rsync",
}


def fmt(x, digits=3):
    if x is None:
        return "–"
    return f"{x:.{digits}f}"


def yes(ok):
    return "**yes**" if ok else "**no**"


def lb(res, w, key="wall"):
    t = res["workloads"].get(w, {}).get("tools", {}).get("lifeboat")
    return t.get(key) if t else None


def tool(res, w, name, key="wall"):
    t = res["workloads"].get(w, {}).get("tools", {}).get(name)
    return t.get(key) if t else None


def pair_spread(res, w, name):
    """Half the interquartile range of `name`'s wall time minus the floor's, repetition
    by repetition, in seconds (0 with fewer than 4 pairs)."""
    tools = res["workloads"][w]["tools"]
    diffs = [
        a["wall"] - b["wall"]
        for a, b in zip(tools[name]["runs"], tools["floor"]["runs"])
        if not a["error"] and not b["error"]
    ]
    if len(diffs) < 4:
        return 0.0
    q = statistics.quantiles(diffs, n=4)
    return (q[2] - q[0]) / 2


def render(res):
    out = []
    m, v = res["machine"], res["versions"]
    out.append(
        f"Measured {res['started']} – {res.get('finished', '(unfinished)')}, "
        f"{res['reps']} repetitions, medians."
        + (f" Not run: {', '.join(res['skipped'])}." if res.get("skipped") else "")
        + "\n"
    )
    out.append(
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, {m['os']}, Linux {m['kernel']}."
    )
    out.append(
        f"- Load average (1, 5, 15 min) before: {' '.join(res['load_before'])}; "
        f"after: {' '.join(res.get('load_after', ['?']))}."
        + (f" {res['load_note']}" if res.get("load_note") else "")
    )
    out.append(
        f"- Versions: {v['lifeboat']}; {v['ansible']}; pyinfra {v['pyinfra']}; "
        f"{v['openssh']}; {v['rsync']}; Python {v['python']}."
    )
    out.append("")
    out.append(
        "| workload | tool | wall (s) | CPU (s) | peak RSS (MiB) | wall ÷ lifeboat's | MiB/s | runs ok | target | met? |"
    )
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for w, wres in res["workloads"].items():
        spec = wres["spec"]
        total_mib = None
        if spec["kind"] == "put":
            total_mib = spec["count"] * spec["size"] * spec["hosts"] / 2**20
        for t, r in wres["tools"].items():
            thr = (
                fmt(total_mib / r["wall"], 0)
                if total_mib is not None and r["wall"]
                else ""
            )
            target, met = "", ""
            if (w, t) in ROW_TARGETS and r["ratio"] is not None:
                target, check = ROW_TARGETS[(w, t)]
                met = yes(check(r["ratio"]))
            ratio = "1" if t == "lifeboat" else fmt(r["ratio"], 2)
            out.append(
                f"| {w} | {TOOL_NAMES.get(t, t)} | {fmt(r['wall'])} | {fmt(r['cpu'])} | "
                f"{fmt(r['rss_mib'], 1)} | {ratio} | {thr} | {r['ok']}/{len(r['runs'])} | {target} | {met} |"
            )
    loads = [
        f"{w} {' '.join(r['load_at_start'][:1])}→{' '.join(r['load_at_end'][:1])}"
        for w, r in res["workloads"].items()
        if "load_at_start" in r
    ]
    if loads:
        out.append("")
        out.append("1-minute load average at the start and end of each workload: " + "; ".join(loads) + ".")
    out.append("")
    out.append("Targets that are not a ratio to one other tool:")
    out.append("")
    out.append("| target | measured | met? |")
    out.append("| --- | --- | --- |")
    rss50 = lb(res, "W2@50", "rss_mib")
    if rss50 is not None:
        out.append(f"| W2@50: lifeboat peak RSS < 40 MiB | {fmt(rss50, 1)} MiB | {yes(rss50 < 40)} |")
    w50, w200 = lb(res, "W2@50"), lb(res, "W2@200")
    if w50 and w200:
        # Since the two sizes run pair by pair, the median of the pairs' ratios; an
        # older results file has only the two medians.
        pairs = res.get("scaling", {}).get("W2@50->W2@200", {})
        f = pairs.get("lifeboat", {}).get("ratio") or w200 / w50
        how = f"median of {len(pairs['lifeboat']['pairs'])} pairs" if "lifeboat" in pairs else "ratio of the medians"
        floor = pairs.get("floor", {}).get("ratio")
        ref = f"; the floor's: {fmt(floor, 2)}×" if floor else ""
        out.append(
            f"| W2: 50 → 200 hosts no worse than linear (≤ 4×) | {fmt(w50)} s → {fmt(w200)} s: "
            f"{fmt(f, 2)}× ({how}{ref}) | {yes(f <= 4)} |"
        )
    w3 = lb(res, "W3")
    if w3 is not None:
        out.append(f"| W3: lifeboat ≤ 1.3 s (one branch: 5 × 0.2 s) | {fmt(w3)} s | {yes(w3 <= 1.3)} |")
    small, big = lb(res, "W4-small", "rss_mib"), lb(res, "W4-big", "rss_mib")
    if small is not None and big is not None:
        out.append(
            f"| W4: lifeboat memory flat in file size (512 MiB file ≤ 64 KiB files + 16 MiB) | "
            f"{fmt(small, 1)} MiB → {fmt(big, 1)} MiB | {yes(big <= small + 16)} |"
        )
    ps = res.get("per_step")
    if ps:
        out.append(
            f"| W1's hosts, chains of 1 and 41 steps ({ps['reps']} runs each, interleaved): engine overhead over the floor < 1 ms per step | "
            f"{fmt(ps['per_step'] * 1000, 2)} ms per added step; {fmt(ps['per_run'] * 1000, 1)} ms per run; "
            f"a chain of 20: {fmt(ps['at_20'] * 1000, 2)} ms per step | {yes(ps['at_20'] * 1000 < 1)} |"
        )
    for w, wres in res["workloads"].items():
        spec = wres["spec"]
        if spec["kind"] != "cmd":
            continue
        f, fc = tool(res, w, "floor"), tool(res, w, "floor", "cpu")
        for variant, label in (("lifeboat", "lifeboat"), ("lifeboat-tmpfs", "lifeboat, journal on tmpfs")):
            l, lc = tool(res, w, variant), tool(res, w, variant, "cpu")
            if l is None or f is None:
                continue
            per_step = (l - f) / spec["steps"] * 1000
            nodes = spec["steps"] * spec["branches"] * spec["hosts"]
            cpu_node = (lc - fc) / nodes * 1000 if lc is not None and fc is not None else None
            per_node = (l - f) / nodes * 1000
            # How far the same difference moved from one repetition to the next: half
            # the interquartile range of the pairs' differences, per step. An overhead
            # over 1 ms by less than that is not told apart from the noise.
            noise = pair_spread(res, w, variant) / spec["steps"] * 1000
            if per_step < 1:
                verdict = yes(True)
            elif per_step - 1 < noise:
                verdict = f"within the noise (±{fmt(noise, 1)} ms per step)"
            else:
                verdict = yes(False)
            out.append(
                f"| {w}: engine overhead over the floor < 1 ms per step ({label}) | "
                f"wall {fmt(per_step, 2)} ms per step along a chain of {spec['steps']} "
                f"({fmt(per_node, 2)} ms per (step, host) node of {nodes}); "
                f"CPU {fmt(cpu_node, 2)} ms per node | {verdict} |"
            )
    out.append("")
    return "\n".join(out)


def main():
    res = json.loads(Path(sys.argv[1]).read_text())
    doc = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    table = render(res)
    if doc is None:
        print(table)
        return
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
