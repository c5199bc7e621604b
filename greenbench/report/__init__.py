"""``greenbench report``: quality-versus-energy tables, Pareto fronts, savings and plots.

``tables`` computes the numbers, ``plots`` draws them (``labels`` puts the text beside their
points), ``notes`` says what a reader must know before trusting them, ``render`` writes Markdown
and HTML, and ``builder`` ties them together for the command line. The report reads records
only; it never runs a model.
"""
