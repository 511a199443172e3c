"""dalston tests (a package so that `tests.fixtures.assets` imports the same way everywhere)."""
