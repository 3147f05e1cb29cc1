"""A chaos window as a picture: requests per outcome over time, fault windows shaded, phase changes marked.

    draw(requests, phases, windows, "timeline.png", title="server sidecar crash")

Top: stacked bars of requests started per time bin, one colour per outcome (a plaintext leak in its own
red). Bottom: each request's latency, coloured the same way, one marker per client. Input is duck-typed (suites.chaos.traffic's
Request, FaultWindow, and (time, name) phase pairs), so the module draws any recorded run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI machines; must precede pyplot
import matplotlib.pyplot as plt

COLOURS = {"mtls": "#2e7d32", "plaintext": "#f9a825", "503": "#6d4c41", "reset": "#455a64", "error": "#8e24aa",
           "leak": "#d50000"}
OTHER = "#9e9e9e"
MARKERS = ("o", "x", "^", "s")  # one per client in the latency panel


def _category(request) -> str:
    if getattr(request, "leak", False):
        return "leak"
    return request.outcome if request.outcome in COLOURS else "other"


def draw(requests: list, phases: list[tuple[float, str]], windows: list, path: str | Path, title: str = "",
         bin_s: float | None = None) -> Path:
    """Write the PNG to `path` and return it. Times are shown in seconds since the first phase mark; the
    bars are `bin_s` wide (default: about 40 bars over the window)."""
    path = Path(path)
    t0 = phases[0][0] if phases else min((r.started for r in requests), default=0.0)
    end = max([r.ended for r in requests] + [p[0] for p in phases] + [t0 + 0.05]) - t0
    bin_s = bin_s or max(0.05, round(end / 40, 2))
    bins = max(1, int(end / bin_s) + 1)
    categories = [c for c in list(COLOURS) + ["other"] if any(_category(r) == c for r in requests)]
    counts = {c: [0] * bins for c in categories}
    for request in requests:
        counts[_category(request)][min(bins - 1, int((request.started - t0) / bin_s))] += 1

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=(3, 2))
    lefts = [i * bin_s for i in range(bins)]
    base = [0] * bins
    for category in categories:
        top.bar(lefts, counts[category], width=bin_s, bottom=base, align="edge", label=category,
                color=COLOURS.get(category, OTHER), edgecolor="white", linewidth=0.3)
        base = [b + c for b, c in zip(base, counts[category], strict=True)]
    clients = list(dict.fromkeys(getattr(r, "client", "") for r in requests))
    for request in requests:
        marker = MARKERS[clients.index(getattr(request, "client", "")) % len(MARKERS)]
        bottom.scatter(request.started - t0, (request.ended - request.started) * 1000, s=12, marker=marker,
                       color=COLOURS.get(_category(request), OTHER))
    if len(clients) > 1:
        bottom.legend(handles=[plt.Line2D([], [], linestyle="", marker=MARKERS[i % len(MARKERS)], color="#424242",
                                          label=f"{name} client") for i, name in enumerate(clients)],
                      loc="upper right", fontsize=7)
    for axis in (top, bottom):
        for window in windows:
            axis.axvspan(window.started - t0, (window.ended or t0 + end) - t0, color="#ef5350", alpha=0.15)
        for when, name in phases[1:]:
            axis.axvline(when - t0, color="#424242", linewidth=0.6, linestyle=":")
    labelled = -1.0
    for when, name in phases[1:]:
        if name != "end" and when - t0 - labelled > end / 60:  # labels closer than that would overprint
            labelled = when - t0
            top.annotate(name, (when - t0, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                         va="top", ha="right", color="#424242")
    for window in windows:
        top.annotate(window.name, (window.started - t0, 1.01), xycoords=("data", "axes fraction"), fontsize=8,
                     color="#c62828")
    top.set_ylabel(f"requests / {bin_s:g} s")
    top.legend(loc="upper right", fontsize=7, ncol=len(categories) or 1)
    bottom.set_ylabel("latency (ms)")
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds since the window opened")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
