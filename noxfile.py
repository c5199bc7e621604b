"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s quickstart`, `nox -s docs`."""

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


@nox.session
def docs(session: nox.Session) -> None:
    # The docs extra is the one list of what the site needs. mkdocs.yml's validation makes a
    # broken link, a missing anchor or a page left out of the nav a warning; --strict fails on it.
    session.install(*TORCH)
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)
