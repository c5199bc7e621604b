"""Image datasets: the bundled digits, and MNIST, Fashion-MNIST and CIFAR-10 from local files.

``datasets`` checks, loads, scales and subsamples them; ``readers`` parses the IDX and CIFAR
file formats. Importing the package is cheap: torch and scikit-learn load only when used.
"""

from greenbench.data.datasets import (
    DATASETS,
    DEFAULT_IMAGE_SIZE,
    DatasetInfo,
    ImageData,
    fraction_indices,
    inspect_dataset,
    load_dataset,
    subset_size,
)

__all__ = [
    "DATASETS",
    "DEFAULT_IMAGE_SIZE",
    "DatasetInfo",
    "ImageData",
    "fraction_indices",
    "inspect_dataset",
    "load_dataset",
    "subset_size",
]
