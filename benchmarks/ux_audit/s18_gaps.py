"""Summarise a harness log's GUI gaps by action: count, total wall, worst gap (wall/cpu, where).
Run: python s18_gaps.py $UX_AUDIT_OUT/logs/s18_TAG.json [min_ms]"""
import json
import sys
from collections import defaultdict

d = json.load(open(sys.argv[1]))
lim = float(sys.argv[2]) if len(sys.argv) > 2 else 50
by = defaultdict(list)
for g in d["gaps"]:
    if g["wall_ms"] >= lim:
        by[g["action"]].append(g)
for a, gs in by.items():
    w = max(gs, key=lambda g: g["wall_ms"])
    print(f"{a[:45]:45s} n={len(gs):4d} sum_wall={sum(g['wall_ms'] for g in gs)/1e3:7.2f}s worst={w['wall_ms']:.0f}ms cpu={w['cpu_ms']:.0f}ms ours={w['ours_frac']} where={w['where'][:2]}")
