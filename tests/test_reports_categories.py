"""The failure-message prefixes the suites write are the ones the report's categories match."""

import re

from reports.categories import CATEGORIES, PREFIXES, category_of


def test_every_prefix_has_its_category_and_only_its_own():
    for category in CATEGORIES:
        # pytest puts "Failed: " or an exception name in front; Allure 2 needs a full match.
        message = f"Failed: {category.prefix} something happened\nsecond line"
        assert category_of(message) is category
        matching = [c.name for c in CATEGORIES if re.fullmatch(c.message_regex(), message)]
        assert matching == [category.name]
    assert category_of("AssertionError: assert 1 == 2") is None
    assert len(set(PREFIXES)) == len(PREFIXES) == 7


def test_the_earliest_prefix_in_a_message_decides():
    message = "HARNESS ERROR: capture failed; the probe said UNEXPECTED OUTCOME: 503"
    assert category_of(message).prefix == "HARNESS ERROR:"


def test_the_suites_write_only_prefixes_the_report_knows():
    from suites import interpret

    written = {value for name, value in vars(interpret).items()
               if name.isupper() and isinstance(value, str) and re.fullmatch(r"[A-Z ]+:", value)}
    assert written, "suites.interpret no longer defines its failure prefixes: update this test"
    assert written <= set(PREFIXES), f"prefixes no report category matches: {written - set(PREFIXES)}"


def test_a_cell_nobody_handles_yet_fails_in_its_own_category():
    import pytest

    from meshproof.scenario import NotSupportedYet
    from suites.runner import refused_loudly

    with pytest.raises(pytest.fail.Exception) as failed, refused_loudly():
        raise NotSupportedYet("cell x", "scenario", "server.app", "'banner' is valid but the oracle does not "
                              "handle it yet (it handles: httpbin)")
    assert category_of(str(failed.value)).name == "Not supported yet"
    assert "server.app" in str(failed.value)
