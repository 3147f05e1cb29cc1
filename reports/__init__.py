"""Allure results, the matrix picture, JUnit, run diffs and the benchmark."""
