"""One prerequisite of a mesh target, as `meshproof doctor` prints it (both backends' doctors build these)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Check:
    """One prerequisite of a mesh target, as `meshproof doctor` prints it."""

    name: str
    ok: bool
    detail: str = ""
    hint: str = ""  # how to get it when missing

    def to_json(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        text = f"{mark} {self.name}: {self.detail}"
        return text if self.ok or not self.hint else f"{text}\n    fix: {self.hint}"
