"""The end of every chaos scenario: figures, timeline, pcaps and requests into Allure, then the verdict.

Chaos results sit in their own Allure suite ("chaos"), one sub-suite per scenario family.
"""

from __future__ import annotations

import json
from pathlib import Path

import allure
import pytest

from reports.categories import PLAINTEXT_LEAK, PREFIXES
from reports.timeline import draw

OUT = Path(__file__).resolve().parents[2] / "reports" / "out" / "chaos"


def describe(family: str, title: str, description: str) -> None:
    allure.dynamic.epic("Chaos")
    allure.dynamic.feature(family)
    allure.dynamic.story(title)
    allure.dynamic.parent_suite("chaos")
    allure.dynamic.suite("chaos")
    allure.dynamic.sub_suite(family)
    allure.dynamic.title(title)
    allure.dynamic.description(description)


def figures_of(traffic, problems: list[str], **measured) -> dict:
    requests = traffic.requests
    return {"sent": len(requests), "failed": sum(not r.succeeded for r in requests),
            "leaked": sum(r.leak for r in requests), "problems": len(problems),
            "orphan_flows": len(traffic.orphan_flows), **measured}


def finish(name: str, traffic, problems: list[str], figures: dict) -> None:
    """Attach everything, then fail with the worst problem (and how many there were) if any."""
    problems = sorted(problems, key=lambda p: min((i for i, x in enumerate(PREFIXES) if p.startswith(x)),
                                                  default=len(PREFIXES)))
    png = draw(traffic.requests, traffic.phases, traffic.windows, traffic.out_dir / "timeline.png", title=name)
    allure.attach.file(str(png), "timeline.png", allure.attachment_type.PNG)
    allure.attach(json.dumps(figures, indent=1), "figures.json", allure.attachment_type.JSON)
    for client, pcap in traffic.pcaps.items():
        if pcap.exists():
            allure.attach.file(str(pcap), f"window-{client}.pcap", "application/vnd.tcpdump.pcap", "pcap")
    t0 = traffic.phases[0][0] if traffic.phases else 0.0
    rows = [dict(r.to_json(), t=round(r.started - t0, 4)) for r in traffic.requests]
    allure.attach(json.dumps({"phases": [(round(t - t0, 4), p) for t, p in traffic.phases], "requests": rows},
                             indent=1), "requests.json", allure.attachment_type.JSON)
    (traffic.out_dir / "figures.json").write_text(json.dumps(figures, indent=1))
    if problems:
        if problems[0].startswith(PLAINTEXT_LEAK):  # the canary in clear where policy said mTLS
            allure.dynamic.severity(allure.severity_level.CRITICAL)
        allure.attach("\n".join(problems), "problems.txt", allure.attachment_type.TEXT)
        more = f" (+{len(problems) - 1} more, see problems.txt)" if len(problems) > 1 else ""
        pytest.fail(f"{problems[0]}{more}", pytrace=False)
