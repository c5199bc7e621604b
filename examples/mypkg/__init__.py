"""A small user project: a data module, a classifier and a generative model of its own, for
``greenbench run`` to sweep (see ../classifier.yaml and ../generative.yaml). It does not import
greenbench."""
