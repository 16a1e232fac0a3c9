"""The mutation check: wrong libraries that keep a strategy's name but take another road (another
strategy's code under its name) or drop a flag that defines it. The contract suites must fail
on every one of them (python -m tests.mutation, run by nox -s tests)."""
