#!/usr/bin/env python3
"""A minimal flame graph (SVG) from `perf script` output, for the README's profile of the
request path: stacks folded root → leaf, each frame a box as wide as its share of samples.
No dependencies (the machine has no FlameGraph scripts or inferno).

    perf record --call-graph dwarf -p PID -- sleep 5
    perf script | benches/flame/flamegraph.py --title "..." > out.svg
"""
import argparse, collections, html, re, sys

def fold(lines):
    stacks = collections.Counter()
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                stacks[tuple(reversed(frames))] += 1
            frames = []
            continue
        if not line.startswith((" ", "\t")):
            frames = []
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)(\+0x[0-9a-f]+)?\s+\((.*)\)$", line)
        name = m.group(1) if m else line.strip()
        name = re.sub(r"\{\{closure\}\}", "{closure}", name)
        name = re.sub(r"<[^<>]*>", "", name) if len(name) > 120 else name
        frames.append(name)
    if frames:
        stacks[tuple(reversed(frames))] += 1
    return stacks

def tree(stacks):
    root = {"n": 0, "c": {}}
    for st, n in stacks.items():
        node = root
        node["n"] += n
        for f in st:
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += n
    return root

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--title", default="flame graph")
    ap.add_argument("--width", type=int, default=1400)
    a = ap.parse_args()
    root = tree(fold(sys.stdin))
    total = root["n"] or 1
    H, W = 16, a.width
    out, depth_max = [], [0]
    def draw(node, name, x, depth):
        w = node["n"] / total * W
        if w < 0.3:
            return
        depth_max[0] = max(depth_max[0], depth)
        out.append((x, depth, w, name, node["n"]))
        cx = x
        for cname, c in sorted(node["c"].items(), key=lambda kv: -kv[1]["n"]):
            draw(c, cname, cx, depth + 1)
            cx += c["n"] / total * W
    draw(root, "all", 0.0, 0)
    height = (depth_max[0] + 3) * H
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="monospace" font-size="11">',
           f'<text x="4" y="14">{html.escape(a.title)} — {total} samples</text>']
    for x, d, w, name, n in out:
        y = height - (d + 1) * H
        hue = 10 + (hash(name) % 40)
        color = "rgb(230,{},60)".format(100 + (hash(name) % 120)) if "tether" in name else f"hsl({hue},70%,65%)"
        label = html.escape(name)
        svg.append(f'<g><title>{label} ({n} samples, {100*n/total:.2f}%)</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{H-1}" fill="{color}"/>')
        if w > 40:
            chars = int(w / 6.6)
            svg.append(f'<text x="{x+2:.1f}" y="{y+11}">{html.escape(name[:chars])}</text>')
        svg.append('</g>')
    svg.append('</svg>')
    print("\n".join(svg))

if __name__ == "__main__":
    main()
