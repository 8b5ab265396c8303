"""Datasets, transforms and the DataLoader.

MNIST (IDX files) and CIFAR-10 (binary batches), each with an optional verified download,
the embedded MNIST subset, image-list datasets, array datasets, subsets and splits, batch
transforms and random augmentations, and a reproducible, resumable ``DataLoader`` that
prepares the next batch in a background thread.
"""

from fastcnn.data.cifar import CIFAR10, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from fastcnn.data.datasets import (
    ArrayDataset,
    Dataset,
    Subset,
    filter_classes,
    one_hot,
    random_split,
)
from fastcnn.data.embedded import embedded_mnist
from fastcnn.data.idx import read_idx, write_idx
from fastcnn.data.image_list import ImageListDataset
from fastcnn.data.loader import DataLoader
from fastcnn.data.mnist import MNIST, MNIST_MIRRORS, MNIST_SHA256, DownloadError
from fastcnn.data.transforms import (
    AvgDownsample2x2,
    Compose,
    Normalize,
    Pad,
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    RandomTransform,
)

__all__ = [
    "CIFAR10",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "ArrayDataset",
    "AvgDownsample2x2",
    "Compose",
    "DataLoader",
    "Dataset",
    "DownloadError",
    "ImageListDataset",
    "Normalize",
    "Pad",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomTransform",
    "Subset",
    "embedded_mnist",
    "filter_classes",
    "one_hot",
    "random_split",
    "read_idx",
    "write_idx",
]
