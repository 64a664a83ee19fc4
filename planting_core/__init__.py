"""planting_core: channel planting (Mitsuno, Nomura, Kurita, ICPR 2020) in a thin PyTorch package."""
from .checkpoint import atomic_save, fingerprint, load_checkpoint, safe_load, save_checkpoint
from .configs import grow_config, load_run_data, student_config, teacher_config, with_defaults
from .data import DATASETS, Data, Split, augment, batches, check_dataset_name, default_root, load_data
from .device import autocast, pick_device, to_device
from .distill import ce_loss, kd_loss, kd_losses, teacher_logits
from .errors import CheckpointError, DataNotFoundError, NonFiniteLossError, PlantingError
from .fetch import fetch_checkpoints, write_manifest
from .experiments import growth_settings, load_or_train, plant_and_save, read_history, train_students, training_settings
from .models import LAYOUTS, NUM_CONVS, PlainCNN, check_widths, count_parameters, param_count
from .params import DEFAULTS, PAPER_NETWORKS, PARAMS, PROFILES, Param, check_params, check_value, profile_params
from .planting import PlantedCNN, PlantedLayer, freeze, is_planted, merge, plant, train_head
from .plots import plot_accuracy_vs_params, plot_comparison, plot_planting_diagram, plot_search, plot_widths
from .proposals import PROPOSALS, Candidate
from . import comparison, depthnet, fetch, fused, parallel, projection, pruning, study, tuning
from .report import METHOD_COLUMNS, SUMMARY_COLUMNS, claims, comparison_points, compute_time, glue, poster_table, result_row, write_method_rows
from .runfolder import RunFolder
from .search import GrowConfig, GrowResult, grow
from .selection import SELECTIONS, Selection
from .stopping import STOP_RULES
from .train import FrozenPrefix, TrainConfig, check_pair, evaluate, fit, trainable_parameters

__version__ = "0.2.0"
__all__ = [
    "atomic_save", "fingerprint", "load_checkpoint", "safe_load", "save_checkpoint",
    "grow_config", "load_run_data", "student_config", "teacher_config", "with_defaults",
    "DATASETS", "Data", "Split", "augment", "batches", "check_dataset_name", "default_root", "load_data",
    "autocast", "pick_device", "to_device",
    "ce_loss", "kd_loss", "kd_losses", "teacher_logits",
    "CheckpointError", "DataNotFoundError", "NonFiniteLossError", "PlantingError",
    "fetch_checkpoints", "write_manifest",
    "growth_settings", "load_or_train", "plant_and_save", "read_history", "train_students", "training_settings",
    "LAYOUTS", "NUM_CONVS", "PlainCNN", "check_widths", "count_parameters", "param_count",
    "DEFAULTS", "PAPER_NETWORKS", "PARAMS", "PROFILES", "Param", "check_params", "check_value", "profile_params",
    "PlantedCNN", "PlantedLayer", "freeze", "is_planted", "merge", "plant", "train_head", "trainable_parameters",
    "plot_accuracy_vs_params", "plot_comparison", "plot_planting_diagram", "plot_search", "plot_widths",
    "PROPOSALS", "Candidate",
    "METHOD_COLUMNS", "SUMMARY_COLUMNS", "claims", "comparison_points", "compute_time", "glue", "poster_table", "result_row", "write_method_rows",
    "RunFolder", "comparison", "depthnet", "fused", "parallel", "fetch", "projection", "pruning", "study", "tuning",
    "GrowConfig", "GrowResult", "grow",
    "SELECTIONS", "Selection",
    "STOP_RULES",
    "FrozenPrefix", "TrainConfig", "check_pair", "evaluate", "fit", "trainable_parameters",
]
