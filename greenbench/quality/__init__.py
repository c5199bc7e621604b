"""Sample-quality scoring for the benchmarks' generative models.

Scores such as KID, FID and precision/recall are computed in the feature space of a small CNN
classifier trained on the benchmark dataset itself, with a fixed recipe and a cache
(``greenbench.quality.extractor``), so that no pretrained weights are ever downloaded and the
numbers stay comparable across runs.
"""
