"""Datasets (a registry) and the on-device loader."""

from ._registry import (Dataset, DatasetInfo, default_data_dir, get_dataset_info, list_datasets, load_dataset,
                        register_dataset)
from . import sources  # noqa: F401  (registration side effects)
from .sources import make_pulses
from .loader import DeviceLoader, augment_batch, train_val_split

__all__ = ["Dataset", "DatasetInfo", "register_dataset", "list_datasets", "get_dataset_info", "load_dataset",
           "default_data_dir", "make_pulses", "DeviceLoader", "augment_batch", "train_val_split"]
