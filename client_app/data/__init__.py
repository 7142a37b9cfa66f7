"""Real data of the silos: loading Fashion-MNIST/MNIST, partitioning it across
organisations, the market split, and label skew."""

from client_app.data.imageset import NUM_CLASSES, ImageSet
from client_app.data.loader import DatasetNotFoundError, IdxFormatError, load_dataset
from client_app.data.partition import PARTITIONERS, OrgData, market_split, partition_dataset
from client_app.data.silo_folder import SiloFolderError, export_silos, read_silo_folder
from strategy.scenario import label_skew

__all__ = [
    "NUM_CLASSES",
    "PARTITIONERS",
    "SiloFolderError",
    "DatasetNotFoundError",
    "IdxFormatError",
    "ImageSet",
    "OrgData",
    "label_skew",
    "load_dataset",
    "export_silos",
    "market_split",
    "partition_dataset",
    "read_silo_folder",
]
