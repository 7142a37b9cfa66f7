"""Real data of the silos: loading Fashion-MNIST/MNIST, partitioning it across
organisations, the market split, and label skew."""

from client_app.data.imageset import NUM_CLASSES, ImageSet
from client_app.data.loader import DatasetNotFoundError, IdxFormatError, load_dataset
from client_app.data.partition import PARTITIONERS, OrgData, market_split, partition_dataset
from strategy.scenario import label_skew

__all__ = [
    "NUM_CLASSES",
    "PARTITIONERS",
    "DatasetNotFoundError",
    "IdxFormatError",
    "ImageSet",
    "OrgData",
    "label_skew",
    "load_dataset",
    "market_split",
    "partition_dataset",
]
