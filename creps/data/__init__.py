"""Datasets: reading ZIP/folder image datasets, the dataset tool, built-in synthetic data."""

from creps.data.dataset import ImageDataset, open_dataset
from creps.data.synthetic import make_synthetic_dataset
from creps.data.tool import convert_dataset

__all__ = ["ImageDataset", "open_dataset", "make_synthetic_dataset", "convert_dataset"]
