"""One prerequisite check of `meshproof doctor`: ✓/✗ line for people, JSON for tools."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Check:
    ok: bool
    name: str
    detail: str = ""
    hint: str = ""  # what to do when it failed

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        text = f"{mark} {self.name}" + (f": {self.detail}" if self.detail else "")
        return text + (f"\n    fix: {self.hint}" if self.hint and not self.ok else "")
