"""The book's experiment apparatus: the parameter table and its configs, run folders, load-or-train, the study,
tuning, the compared methods, the comparison, reports, plots, the command line and the benchmark.

    import planting_core as pc                 # the library
    from planting_core import book as pb       # the apparatus: pb.RunFolder, pb.load_or_train, pb.study, ...
"""
from . import bench, comparison, depthnet, fetch, projection, pruning, study, tuning
from .configs import grow_config, load_run_data, student_config, teacher_config, with_defaults
from .experiments import growth_settings, load_or_train, plant_and_save, read_history, train_students
from .fetch import fetch_checkpoints, write_manifest
from .params import DEFAULTS, PAPER_NETWORKS, PARAMS, PROFILES, Param, check_params, check_value, profile_params
from .plots import plot_accuracy_vs_params, plot_comparison, plot_planting_diagram, plot_search, plot_widths
from .report import (METHOD_COLUMNS, SUMMARY_COLUMNS, claims, comparison_points, compute_time, glue, poster_table,
                     result_row, write_method_rows)
from .runfolder import RunFolder
