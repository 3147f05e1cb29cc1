"""Failure categories: the message prefixes the suites write and the Allure categories that group by them.

A failing cell's message starts with exactly one of these prefixes; the report's categories match on it.
Keep the prefixes here and nowhere else so a renamed prefix cannot silently empty a category.
"""

from __future__ import annotations

from dataclasses import dataclass

PLAINTEXT_LEAK = "PLAINTEXT LEAK:"
WEAK_TLS = "WEAK TLS:"
UNEXPECTED_OUTCOME = "UNEXPECTED OUTCOME:"
PROPAGATION_TIMEOUT = "PROPAGATION TIMEOUT:"
HARNESS_ERROR = "HARNESS ERROR:"
INFRA = "INFRA:"
NOT_SUPPORTED_YET = "NOT SUPPORTED YET:"


@dataclass(frozen=True)
class Category:
    name: str
    prefix: str
    description: str
    statuses: tuple[str, ...] = ("failed", "broken")

    def message_regex(self) -> str:
        """Matches the prefix anywhere in the message, as a full match (Allure 2 uses Java `matches`) and as
        a search (Allure 3 uses JS `test`). pytest puts "Failed: " or an exception name in front of it."""
        return r"[\s\S]*" + _regex_escape(self.prefix) + r"[\s\S]*"

    def to_allure(self) -> dict:
        return {"name": self.name, "messageRegex": self.message_regex(), "matchedStatuses": list(self.statuses),
                "description": self.description}


# Order matters: Allure puts a result in the first category that matches.
CATEGORIES = (
    Category("Plaintext leak", PLAINTEXT_LEAK, "The canary crossed the wire in clear where policy demands TLS."),
    Category("Weak TLS", WEAK_TLS,
             "The call succeeded as predicted, but its handshake is weaker than Istio's: an older TLS version, "
             "certificates readable on the wire, or Istio's ALPN or SNI missing."),
    Category("Unexpected outcome", UNEXPECTED_OUTCOME,
             "The mesh answered, but outcome, wire verdict or peer identity differ from the oracle."),
    Category("Propagation timeout", PROPAGATION_TIMEOUT, "A policy change did not reach the sidecars in time."),
    Category("Harness or capture error", HARNESS_ERROR, "meshproof itself failed: probe, capture or classifier."),
    Category("Infrastructure", INFRA, "The mesh target could not be set up or reached."),
    Category("Not supported yet", NOT_SUPPORTED_YET,
             "A valid cell that the oracle or the mesh target does not handle yet: refused, never run as the default."),
)

PREFIXES = tuple(c.prefix for c in CATEGORIES)


def category_of(message: str | None) -> Category | None:
    """The category a failure message belongs to, by the earliest prefix in it."""
    if not message:
        return None
    found = [(message.find(c.prefix), i) for i, c in enumerate(CATEGORIES) if c.prefix in message]
    return CATEGORIES[min(found)[1]] if found else None


def allure_categories() -> list[dict]:
    """categories.json content (Allure 2 format, which Allure 3 also accepts in its config)."""
    return [c.to_allure() for c in CATEGORIES]


def _regex_escape(text: str) -> str:
    # re.escape also escapes spaces ("\ "), which JS regexes reject under the `u` flag; escape only specials.
    return "".join("\\" + ch if ch in r".^$*+?()[]{}|\/" else ch for ch in text)
