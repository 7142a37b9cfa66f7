"""Real data of the silos: loading Fashion-MNIST/MNIST, partitioning it across
organisations (Flower Datasets), the market split, and per-silo data folders."""

from task.data.loader import DatasetNotFoundError, IdxFormatError, load_dataset
from task.data.partition import PARTITIONERS, OrgData, market_split, partition_dataset, server_split
from task.data.silo_folder import SiloFolderError, export_silos, read_silo_folder
from task.images import NUM_CLASSES, ImageSet

__all__ = [
    "NUM_CLASSES",
    "PARTITIONERS",
    "SiloFolderError",
    "DatasetNotFoundError",
    "IdxFormatError",
    "ImageSet",
    "OrgData",
    "load_dataset",
    "export_silos",
    "market_split",
    "partition_dataset",
    "server_split",
    "read_silo_folder",
]
