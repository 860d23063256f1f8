"""Draws latency against rate as an SVG (benches/load.sh).

plot.py CURVE OUT.svg : CURVE has one line per point, `server fraction rate p50_ms p99_ms
non2xx`, from the open-loop generator. Each server gets one colour: p99 as a solid line,
p50 dashed; the rate (requests/s) across, the latency (ms, logarithmic) up. A point where
some requests were not answered 2xx is drawn hollow.
"""
import math
import sys
from collections import defaultdict

curve_file, out = sys.argv[1], sys.argv[2]
series = defaultdict(list)
for line in open(curve_file):
    server, _fraction, rate, p50, p99, non2xx = line.split()
    series[server].append((float(rate), float(p50), float(p99), int(non2xx)))

width, height = 760, 440
left, right, top, bottom = 70, 170, 30, 55
plot_w, plot_h = width - left - right, height - top - bottom
max_rate = max(rate for points in series.values() for rate, *_ in points) or 1
latencies = [v for points in series.values() for _, p50, p99, _ in points for v in (p50, p99) if v > 0]
low = 10 ** math.floor(math.log10(min(latencies or [0.1])))
high = 10 ** math.ceil(math.log10(max(latencies or [10])))
if high <= low:
    high = low * 10


def x(rate):
    return left + plot_w * rate / max_rate


def y(ms):
    ms = max(ms, low)
    return top + plot_h * (1 - (math.log10(ms) - math.log10(low)) / (math.log10(high) - math.log10(low)))


colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
       f'font-family="sans-serif" font-size="12">',
       f'<rect width="{width}" height="{height}" fill="white"/>',
       f'<text x="{left}" y="18" font-size="14">Latency against rate, open loop (p99 solid, p50 dashed)</text>']
decade = low
while decade <= high * 1.0001:
    svg.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(decade):.1f}" y2="{y(decade):.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{left - 6}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g} ms</text>')
    decade *= 10
step = 10 ** math.floor(math.log10(max_rate))
if max_rate / step < 3:
    step /= 2
tick = 0.0
while tick <= max_rate * 1.0001:
    svg.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#eee"/>')
    svg.append(f'<text x="{x(tick):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{tick:g}</text>')
    tick += step
svg.append(f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle">requests/s</text>')
svg.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
for index, (server, points) in enumerate(sorted(series.items())):
    colour = colours[index % len(colours)]
    points.sort()
    for column, dash in ((2, ""), (1, ' stroke-dasharray="5,4"')):
        path = " ".join(f"{x(p[0]):.1f},{y(p[column]):.1f}" for p in points)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for p in points:
            fill = "white" if p[3] else colour
            svg.append(f'<circle cx="{x(p[0]):.1f}" cy="{y(p[column]):.1f}" r="3" fill="{fill}" stroke="{colour}"/>')
    legend_y = top + 20 + 20 * index
    svg.append(f'<line x1="{left + plot_w + 15}" x2="{left + plot_w + 40}" y1="{legend_y}" y2="{legend_y}" '
               f'stroke="{colour}" stroke-width="2"/>')
    svg.append(f'<text x="{left + plot_w + 46}" y="{legend_y + 4}">{server}</text>')
svg.append("</svg>")
open(out, "w").write("\n".join(svg) + "\n")
print(f"wrote {out}")
