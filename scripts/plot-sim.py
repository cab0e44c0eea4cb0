#!/usr/bin/env python3
"""Plots a site's load and share of demand over time from `tdnd simulate --trace-file` (SVG).

    tdnd simulate sim/demo.yaml --trace fra1 --trace-file build/sim/demo-fra1.csv
    scripts/plot-sim.py build/sim/demo-fra1.csv --site fra1 --out docs/sim-demo-fra1.svg

One line per steering rule. The load panel marks capacity (1.0) and the edge water marks
(0.75, 0.9). Plain SVG, no plotting library.
"""
import argparse
import csv

COLOURS = {"nearest-binary": "#d62728", "full-not-full": "#1f77b4", "budgets": "#2ca02c"}


def panel(series, top, y0, height, width, left, label, marks):
    """One panel's SVG: axes, grid lines at `marks`, and a polyline per rule."""
    parts = []
    end = max(t for points in series.values() for t, _ in points) or 1
    x = lambda t: left + (width - left - 20) * t / end
    y = lambda v: y0 + height - height * min(v, top) / top
    parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>' % (left, y0, width - left - 20, height))
    for mark, style in marks:
        parts.append(
            '<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#888" stroke-dasharray="%s"/>'
            % (left, y(mark), width - 20, y(mark), style))
        parts.append('<text x="%d" y="%.1f" font-size="11" text-anchor="end">%g</text>' % (left - 4, y(mark) + 4, mark))
    for rule, points in series.items():
        path = " ".join("%.1f,%.1f" % (x(t), y(v)) for t, v in points)
        parts.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (COLOURS.get(rule, "#000"), path))
    parts.append('<text x="%d" y="%d" font-size="13">%s</text>' % (left, y0 - 6, label))
    for tick in range(0, int(end) + 1, max(1, int(end) // 6 // 60 * 60 or 60)):
        parts.append('<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%d</text>' % (x(tick), y0 + height + 14, tick))
    return parts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("csv")
    parser.add_argument("--site", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    load, share = {}, {}
    with open(args.csv) as handle:
        for row in csv.DictReader(handle):
            if row["site"] != args.site:
                continue
            load.setdefault(row["rule"], []).append((float(row["time"]), float(row["load"])))
            share.setdefault(row["rule"], []).append((float(row["time"]), float(row["share"])))
    if not load:
        raise SystemExit("%s: no samples for site %s" % (args.csv, args.site))
    width, left = 900, 50
    top_share = max(v for points in share.values() for _, v in points) * 1.1 or 1
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="470" font-family="sans-serif">' % width]
    parts.append('<rect width="100%" height="100%" fill="white"/>')
    parts += panel(load, 2.0, 30, 170, width, left, "%s: load (1 = capacity)" % args.site,
                   [(0.75, "2,3"), (0.9, "6,3"), (1.0, "1,0"), (2.0, "1,0")])
    parts += panel(share, top_share, 250, 170, width, left, "%s: share of all demand" % args.site,
                   [(round(top_share / 2, 3), "2,3")])
    parts.append('<text x="%d" y="462" font-size="11">simulated seconds</text>' % (width // 2 - 40))
    for index, rule in enumerate(load):
        parts.append('<rect x="%d" y="8" width="14" height="4" fill="%s"/>' % (width - 420 + index * 135, COLOURS.get(rule, "#000")))
        parts.append('<text x="%d" y="14" font-size="12">%s</text>' % (width - 402 + index * 135, rule))
    parts.append("</svg>")
    with open(args.out, "w") as handle:
        handle.write("\n".join(parts) + "\n")
    print("%s: %s over %d rules" % (args.out, args.site, len(load)))


if __name__ == "__main__":
    main()
