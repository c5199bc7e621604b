"""The parent process, sole writer of a sweep's results folder: the sweep file (``schema``),
the runner, the progress line, ``calibrate``, and the executors that run point processes."""
