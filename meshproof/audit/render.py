"""What `meshproof audit` prints: the summary line, the terminal table (rich) and the JSON file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from meshproof.audit.inventory import Inventory
from meshproof.audit.pairs import Pair

STATUS_STYLE = {"mtls": "green", "app-tls": "cyan", "cleartext": "yellow", "broken": "bold red", "unknown": "dim"}
# The statuses after mTLS, as the summary names them; app TLS only when there is some.
LABELS = {"app-tls": "app TLS without mesh mTLS", "cleartext": "cleartext", "broken": "broken",
          "unknown": "not predicted"}
OPTIONAL = ("app-tls", "unknown")


def summary(pairs: list[Pair], lists: bool = True) -> str:
    """"312 pairs: 290 mTLS, 14 cleartext (a -> b, ...), 8 broken (...)"; lists=False: the numbers only."""
    counts = Counter(p.status for p in pairs)
    parts = [f"{counts['mtls']} mTLS"]
    for status, label in LABELS.items():
        if status in OPTIONAL and not counts[status]:
            continue
        part = f"{counts[status]} {label}"
        if lists and counts[status]:
            names = sorted({f"{p.client.ref} -> {p.port.ref}" for p in pairs if p.status == status})
            part += f" ({', '.join(names[:5])}{f', ... {len(names) - 5} more' if len(names) > 5 else ''})"
        parts.append(part)
    return f"{len(pairs)} pairs: " + ", ".join(parts)


def warnings(inv: Inventory) -> list[str]:
    lines = []
    if inv.skipped_kinds:
        total = sum(inv.skipped_kinds.values())
        kinds = ", ".join(f"{k} {n}" for k, n in inv.skipped_kinds.items())
        lines.append(f"skipped {total} objects of kinds meshproof does not read ({kinds})")
    lines += [f"refused by Istio's validation, left out: {r}" for r in inv.rejected]
    lines += [f"sidecar unknown, its pairs not predicted: {w.ref} ({w.kind}): {w.sidecar_why}"
              for w in inv.unknown_sidecars]
    lines += inv.notes
    return lines


def table(pairs: list[Pair], title: str) -> Table:
    t = Table(title=title, show_lines=False)
    for column in ("client", "service port", "server", "outcome", "wire", "rule"):
        t.add_column(column, overflow="fold")
    for p in sorted(pairs, key=lambda p: (p.status != "broken", p.status != "cleartext", p.key)):
        client = p.client.ref + ("" if p.client.sidecar else " (no sidecar)" if p.client.sidecar is False else " (?)")
        server = p.server.ref + ("" if p.server.sidecar else " (no sidecar)" if p.server.sidecar is False else " (?)")
        pred = p.prediction
        style = STATUS_STYLE[p.status]
        t.add_row(client, p.port.ref, server, f"[{style}]{pred.outcome if pred else 'unknown'}[/]",
                  str(pred.wire) if pred else "", pred.rule if pred else _short(p.not_predicted or ""))
    return t


def _short(why: str) -> str:
    return why.split(":", 1)[0]


TABLE_ROWS = 300  # beyond this many pairs the table leaves the mTLS ones out (they need no action)


def print_audit(pairs: list[Pair], inv: Inventory, console: Console, every_pair: bool = False) -> None:
    for line in warnings(inv):
        console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    shown = pairs if every_pair or len(pairs) <= TABLE_ROWS else [p for p in pairs if p.status != "mtls"]
    console.print(table(shown, "meshproof audit: predicted outcome of each client -> Service port"))
    if len(shown) < len(pairs):
        console.print(f"{len(pairs) - len(shown)} mTLS pairs not shown (--all lists them; --json has every pair)",
                      highlight=False)
    console.print(summary(pairs), highlight=False, soft_wrap=True)


def write_json(path: str, pairs: list[Pair], inv: Inventory, extra: dict | None = None) -> None:
    counts = Counter(p.status for p in pairs)
    data = {"summary": summary(pairs), "counts": dict(counts), "warnings": warnings(inv),
            "unknown_sidecars": [w.ref for w in inv.unknown_sidecars], "rejected": inv.rejected,
            "skipped_kinds": inv.skipped_kinds, **(extra or {}), "pairs": [p.to_json() for p in pairs]}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
