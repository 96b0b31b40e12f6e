"""Datasets (a registry) and the on-device loader."""

from . import sources  # noqa: F401  (registration side effects)
from ._registry import (
                        Dataset,
                        DatasetInfo,
                        checkpoint_dataset,
                        default_data_dir,
                        get_dataset_info,
                        list_datasets,
                        load_dataset,
                        register_dataset,
)
from .loader import DeviceLoader, augment_batch, stratified_subset, train_val_split
from .sources import make_pulses

__all__ = ["Dataset", "DatasetInfo", "register_dataset", "list_datasets", "get_dataset_info", "load_dataset",
           "default_data_dir", "checkpoint_dataset", "make_pulses", "DeviceLoader", "augment_batch", "train_val_split",
           "stratified_subset"]
