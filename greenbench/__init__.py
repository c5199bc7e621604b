"""greenbench: what a training choice costs in joules, and what it buys in quality."""

__version__ = "0.1.0"
