"""The picture of an audit: client workloads (rows) x Service ports (columns), each cell filled with the wire
class the oracle predicts (reports/wire_classes.py: Istio mTLS, other TLS, cleartext, refused; not predicted
in grey), as HTML (hover for rule and reason) and PNG. A Service port backed by several workloads shows the
worst of their pairs."""

from __future__ import annotations

import html
from pathlib import Path

from meshproof.audit.pairs import Pair
from reports.wire_classes import CLASSES, CLEARTEXT, MTLS, NOT_RUN, OTHER_TLS, REFUSED, WireClass, classify

WORST_FIRST = (REFUSED, CLEARTEXT, NOT_RUN, OTHER_TLS, MTLS)
PNG_LIMIT = 150  # rows or columns beyond this make an unreadable picture: the HTML only
NOT_PREDICTED = WireClass("not-run", "not predicted", NOT_RUN.glyph, NOT_RUN.colour, NOT_RUN.ink,
                          "the input cannot tell (sidecar unknown) or the oracle has no rules for it yet")


def pair_class(pair: Pair) -> WireClass:
    if pair.prediction is None:
        return NOT_PREDICTED
    found = classify(pair.prediction.outcome, pair.prediction.wire)
    return NOT_PREDICTED if found is NOT_RUN else found


def grid(pairs: list[Pair]) -> tuple[list[str], list[str], dict[tuple[str, str], list[Pair]]]:
    cells: dict[tuple[str, str], list[Pair]] = {}
    for p in pairs:
        cells.setdefault((p.client.ref, p.port.ref), []).append(p)
    rows = sorted({c for c, _ in cells})
    columns = sorted({s for _, s in cells})
    return rows, columns, cells


def worst(found: list[Pair]) -> WireClass:
    classes = {pair_class(p).key for p in found}
    return next((c for c in WORST_FIRST if c.key in classes), NOT_PREDICTED)


def _tip(found: list[Pair]) -> str:
    return "\n".join(f"{p.server.ref}: {p.prediction.outcome} ({p.prediction.rule}) {p.prediction.reason}"
                     if p.prediction else f"{p.server.ref}: {p.not_predicted}" for p in found)


def to_html(pairs: list[Pair], summary: str, title: str = "meshproof audit") -> str:
    esc = html.escape
    rows, columns, cells = grid(pairs)
    classes = (*CLASSES, NOT_PREDICTED)
    css = "".join(f"td.{c.key} {{ background: {c.colour}; color: {c.ink}; }}\n" for c in classes)
    legend = "".join(f'<span style="background:{c.colour};color:{c.ink}" title="{esc(c.meaning)}">{c.glyph} '
                     f"{esc(c.label)}</span>" for c in classes)
    head = "".join(f'<th class="port">{esc(c)}</th>' for c in columns)
    body = []
    for row in rows:
        tds = []
        for column in columns:
            found = cells.get((row, column))
            if not found:
                tds.append("<td></td>")
                continue
            k = worst(found)
            tds.append(f'<td class="{k.key}" title="{esc(_tip(found))}" data-class="{k.key}">{k.glyph}</td>')
        body.append(f'<tr><th class="client">{esc(row)}</th>{"".join(tds)}</tr>')
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>'
            "body { font-family: sans-serif; margin: 1em; } table { border-collapse: collapse; }"
            "th, td { border: 1px solid #777; padding: 2px 6px; font-size: 12px; text-align: center; }"
            "th.client { text-align: left; white-space: nowrap; }"
            "th.port { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }"
            f".legend span {{ display: inline-block; padding: 3px 8px; margin-right: 6px; }}{css}</style></head>"
            f"<body><h2>{esc(title)}</h2><p>{esc(summary)}</p><p class=\"legend\">{legend}</p>"
            "<p>Rows: client workloads; columns: Service ports. Hover a cell for the rule and the reason.</p>"
            f'<table><tr><th>client \\ Service port</th>{head}</tr>{"".join(body)}</table></body></html>\n')


def to_png(pairs: list[Pair], path: Path, summary: str, title: str = "meshproof audit") -> bool:
    """False (nothing written) when the grid is too large to read as a picture."""
    rows, columns, cells = grid(pairs)
    if len(rows) > PNG_LIMIT or len(columns) > PNG_LIMIT:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    fig, ax = plt.subplots(figsize=(max(8.0, 3 + 0.45 * len(columns)), 3 + 0.32 * len(rows)))
    for y, row in enumerate(rows):
        for x, column in enumerate(columns):
            found = cells.get((row, column))
            if found:
                k = worst(found)
                ax.add_patch(Rectangle((x, y), 1, 1, facecolor=k.colour, edgecolor="white",
                                       hatch="/" if k is CLEARTEXT else None))
                ax.text(x + 0.5, y + 0.5, k.glyph, ha="center", va="center", color=k.ink, fontsize=9)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([i + 0.5 for i in range(len(columns))], columns, rotation=90, fontsize=8)
    ax.set_yticks([i + 0.5 for i in range(len(rows))], rows, fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    handles = [Patch(facecolor=c.colour, edgecolor="#777", hatch="/" if c is CLEARTEXT else None,
                     label=f"{c.glyph} {c.label}") for c in (*CLASSES, NOT_PREDICTED)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    ax.set_title(f"{title}\n{summary}", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_picture(pairs: list[Pair], summary: str, counts: str, out_dir: str | Path) -> list[Path]:
    """summary: the audit's summary line (with its lists), for the HTML; counts: its numbers, for the PNG."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "audit-matrix.html"]
    written[0].write_text(to_html(pairs, summary), encoding="utf-8")
    if to_png(pairs, out / "audit-matrix.png", counts):
        written.append(out / "audit-matrix.png")
    return written
