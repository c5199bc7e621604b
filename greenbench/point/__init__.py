"""The point process: trains, measures and scores one point of a sweep, and hands back its
record and files (``run``). It never writes the results store and never imports
``greenbench.sweep``; ``child`` is its entry point (``python -m greenbench.point.child``)."""
