#!/usr/bin/env python3
# Summarizes the output of scripts/benchmarks/ledger-and-payloads.sh run with
# three binaries (base, after, after with another allocator): per-round
# ratios and their medians.
#
#   python3 scripts/benchmarks/summarize-ledger-and-payloads.py OUTPUT.txt
import re, sys, statistics as st, collections as C
rows = C.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r"r(\d+)\.b(\d+) (.+?)\t(\d+)/s\t([\d.]+) MB/s\tratio ([\d.]+)", line)
    if m:
        r, b, label, ps, mbs, ratio = m.groups()
        rows[(int(b), label)].append((int(r), float(ps), float(mbs), float(ratio)))
    m = re.match(r"r(\d+)\.b(\d+) (.+?)\tnode VmHWM (\d+) kB\tdb \+(\d+) bytes/task", line)
    if m:
        r, b, label, hwm, db = m.groups()
        rows[(int(b), label + " mem")].append((int(r), int(hwm), int(db)))
names = {1: "base", 2: "after", 3: "after+mimalloc"}
for b in (1, 2, 3):
    no = {r: ratio for r, _, _, ratio in rows[(b, "c=32 no ledger")]}
    for label in ("c=32 ledger", "c=32 ledger crash"):
        rs = [ratio / no[r] for r, _, _, ratio in rows[(b, label)] if r in no]
        if rs:
            print(f"{names[b]:16} {label:20} ledger/no-ledger (each vs baseline): " + ", ".join(f"{x:.2f}" for x in rs) + f"  median {st.median(rs):.2f}")
    ps = [p for _, p, _, _ in rows[(b, "c=32 no ledger")]]
    print(f"{names[b]:16} c=32 no ledger /s: {ps}")
    for size in ("64k", "512k", "4m"):
        for c in (1, 8):
            l = f"{size} c={c}"
            mbs = [m for _, _, m, _ in rows[(b, l)]]
            mem = rows[(b, l + " mem")]
            if mbs:
                print(f"{names[b]:16} {l:10} MB/s {mbs} median {st.median(mbs):.1f}; node VmHWM MiB {[round(h/1024) for _, h, _ in mem]}; db bytes/task median {st.median([d for _, _, d in mem]):.0f}")
# after vs base, and mimalloc vs after, per round, for matching labels
for (x, y) in ((2, 1), (3, 2)):
    print(f"--- {names[x]} / {names[y]} per round")
    for label in ["c=32 no ledger", "c=32 ledger"] + [f"{s} c={c}" for s in ("64k", "512k", "4m") for c in (1, 8)]:
        a = {r: p for r, p, _, _ in rows[(x, label)]}
        b_ = {r: p for r, p, _, _ in rows[(y, label)]}
        rs = [a[r] / b_[r] for r in a if r in b_ and b_[r]]
        if rs:
            print(f"  {label:16} " + ", ".join(f"{v:.2f}" for v in rs) + f"  median {st.median(rs):.2f}")
