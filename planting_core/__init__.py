"""planting_core: channel planting (Mitsuno, Nomura, Kurita, ICPR 2020) in a thin PyTorch package."""
from .checkpoint import atomic_save, load_checkpoint, safe_load, save_checkpoint
from .data import DATASETS, Data, Split, augment, batches, check_dataset_name, default_root, load_data
from .distill import ce_loss, kd_loss, teacher_logits
from .experiments import (SUMMARY_COLUMNS, claims, compute_time, glue, load_or_train, plant_and_save, poster_table, result_row,
                          train_students)
from .errors import CheckpointError, DataNotFoundError, NonFiniteLossError, PlantingError
from .models import LAYOUTS, PlainCNN, check_widths, count_parameters, param_count, to_device
from .params import NOTEBOOK_PARAMS, check_params
from .plots import plot_accuracy_vs_params, plot_search, plot_widths
from .planting import (PlantedLayer, freeze, frozen_inputs, is_planted, merge, plant, planted_forward,
                       trainable_parameters)
from .search import GrowConfig, GrowResult, grow
from .train import TrainConfig, check_pair, evaluate, fit, pick_device

__version__ = "0.1.0"
__all__ = [
    "atomic_save", "load_checkpoint", "safe_load", "save_checkpoint",
    "DATASETS", "Data", "Split", "augment", "batches", "check_dataset_name", "default_root", "load_data",
    "ce_loss", "kd_loss", "teacher_logits",
    "SUMMARY_COLUMNS", "claims", "compute_time", "glue", "load_or_train", "plant_and_save", "poster_table", "result_row", "train_students",
    "CheckpointError", "DataNotFoundError", "NonFiniteLossError", "PlantingError",
    "LAYOUTS", "PlainCNN", "check_widths", "count_parameters", "param_count",
    "PlantedLayer", "freeze", "frozen_inputs", "is_planted", "merge", "plant", "planted_forward",
    "trainable_parameters",
    "NOTEBOOK_PARAMS", "check_params",
    "plot_accuracy_vs_params", "plot_search", "plot_widths",
    "GrowConfig", "GrowResult", "grow",
    "TrainConfig", "check_pair", "evaluate", "fit", "pick_device", "to_device",
]
