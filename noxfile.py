"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s quickstart`."""

import nox

# The tested torch release, written once in .ci/torch.txt; its CPU build installs quickly and CI
# pins it. On a GPU machine, install the CUDA build of torch yourself and run pytest directly.
TORCH = ("-r", ".ci/torch.txt")

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install(*TORCH)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "greenbench", "tests", "benchmarks", "examples",
                "noxfile.py")


@nox.session
def quickstart(session: nox.Session) -> None:
    session.install(*TORCH)
    session.install("-e", ".")
    session.run("greenbench", "run", "sweeps/quickstart.yaml", *session.posargs)
