"""pytest plugin: no unknown-status `<fixture>::<lambda>` teardown steps in Allure.

allure-pytest (2.16) wraps every finalizer of a fixture as a teardown step once the fixture is set up. Since
pytest 9.1 the first of them is pytest's own (FixtureDef.execute's lambda that fires
pytest_fixture_post_finalizer). Allure closes the fixture's container inside that very call, so the wrapped
step is never stopped and every test shows `mesh::<lambda>`, `pytestconfig::<lambda>` ... with unknown status
(allure-python issue 918). This outer hook wrapper runs after Allure's and unwraps the finalizers that belong to
pytest itself; the fixtures' own teardowns stay reported.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    yield
    finalizers = getattr(fixturedef, "_finalizers", [])
    for index, finalizer in enumerate(finalizers):
        inner = getattr(finalizer, "_fixture_function", None)
        if inner is not None and getattr(inner, "__module__", "").startswith("_pytest."):
            finalizers[index] = inner
