"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s quickstart`."""

import nox

# The tested torch release; its CPU build installs quickly and CI pins it. On a GPU machine,
# install the CUDA build of torch yourself and run pytest directly.
TORCH = "torch==2.13.0"

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "greenbench", "tests", "benchmarks", "noxfile.py")


@nox.session
def quickstart(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".")
    session.run("greenbench", "run", "benchmarks/quickstart.yaml", *session.posargs)
