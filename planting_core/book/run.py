"""The main job: train (or load) a teacher and an initial network, then grow the network by planting.

    python -m planting_core --dataset fashion-mnist --out runs/fashion-mnist
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import os
import sys
from typing import Any

from ..speed import distributed
from ..checkpoint import write_json
from .configs import grow_config, load_run_data, student_config, teacher_config, with_defaults
from ..device import pick_device
from ..errors import PlantingError, cli
from .experiments import load_or_train, plant_and_save
from ..models import count_parameters
from .params import PARAMS, check_value
from .runfolder import RunFolder
from ..search import GrowConfig

# the parameters of the main job, in the order --help lists them (each option's default and help: the table)
JOB_PARAMS = ["dataset", "data_root", "subset", "val_size", "image_size", "skip_bad_images", "seed", "device",
              "teacher_width", "widths", "teacher_epochs", "epochs", "batch_size", "lr", "plant_epochs", "plant_lr", "T", "alpha", "augment",
              "channels", "init", "propose", "select", "stop", "max_rounds", "max_params", "min_delta", "finetune_old",
              "finetune_head", "stop_split", "fused", "candidate_threads", "cuda_graph",
              "progress"]
ALIASES = {"data_root": ["--root"]}


def parse_value(name: str, text: str) -> Any:
    """A command-line value as the table's type: Python literals (5000, None, [8, 8, 8, 8, 8], 0.5), else text."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(value, tuple):
        value = list(value)  # --widths 8,8,8,8,8
    readings = [value, text]
    if isinstance(value, int) and not isinstance(value, bool):
        readings.insert(1, float(value))  # --lr 1 means 1.0, but --val-size 64 stays a count
    return next((r for r in readings if PARAMS[name].valid(r)), value)  # an invalid value is named by the check


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The main job's options, built from the parameter table."""
    p = argparse.ArgumentParser(prog="python -m planting_core", description=__doc__.splitlines()[0])
    for name in JOB_PARAMS:
        param = PARAMS[name]
        flags = [f"--{name.replace('_', '-')}", *ALIASES.get(name, [])]
        help_ = f"{param.meaning} (default {param.default!r})"
        if isinstance(param.default, bool):
            p.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=param.default, help=help_)
        else:
            p.add_argument(*flags, dest=name, default=param.default, metavar=name.upper(), help=help_,
                           type=lambda text, name=name: parse_value(name, text))
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the whole job; bad input ends with a one-line message and exit code 2."""
    code = cli(lambda: job(parse_args(argv)))
    if distributed.abandoned:  # a collective step is still pending: the process group's clean-up would abort
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def job(a: argparse.Namespace) -> None:
    """Teacher and initial network (load-or-train), then the search; results in the run folder."""
    params = {name: getattr(a, name) for name in JOB_PARAMS}
    for name, value in params.items():  # every option, before any work
        check_value(name, value)
    params = with_defaults(params)
    grow_cfg = grow_config(params, params["seed"]).check()
    if a.out is not None and not str(a.out).strip():
        raise PlantingError("--out must be a folder path, got an empty string")
    pick_device(params["device"])  # e.g. --device mps on a machine without it, before anything is written
    distributed.init_from_env(params["device"])  # under torchrun: join the other processes (one GPU each)
    folder = RunFolder(a.out or f"runs/{params['dataset']}")
    try:
        distributed.check_same("arguments", {**params, "out": str(folder.root)})
        with contextlib.ExitStack() as held:
            # one writer per run folder (under torchrun, rank 0 holds it); a second job ends here, naming its pid
            distributed.on_main(lambda: held.enter_context(folder.lock()))
            run_job(params, grow_cfg, folder)
    except RuntimeError as err:  # a collective step past its deadline: one line naming who stopped answering
        if distributed.is_timeout(err):
            raise distributed.timeout_error() from None
        raise


def run_job(params: dict[str, Any], grow_cfg: GrowConfig, folder: RunFolder) -> None:
    """The job's work, with every parameter already checked and the run folder locked."""
    say = print if distributed.is_main() else (lambda *args, **kwargs: None)  # under torchrun: rank 0 speaks
    params = params if distributed.is_main() else {**params, "progress": False}
    seed = params["seed"]
    data = distributed.on_main(lambda: load_run_data(params))  # rank 0 first: it may download the dataset
    if data is None:  # the other processes, once rank 0 has the files
        data = load_run_data(params)
    say(data.describe(), "on", data.train.x.device, flush=True)
    teacher = load_or_train(folder.teacher, [params["teacher_width"]] * 5, data, teacher_config(params),
                            seed=seed, desc="teacher")
    initial = load_or_train(folder.initial(seed), params["widths"], data, student_config(params, seed),
                            seed=seed, desc="initial")
    for tag, net in (("teacher", teacher), ("initial", initial)):
        say(f"{tag}: widths {net.widths}, {count_parameters(net):,} params, test acc {net.meta['test_acc']:.4f}")
    run = folder.planting(seed)
    result = plant_and_save(initial, teacher, data, grow_cfg, run, progress=params["progress"])
    kept = result.chosen().iloc[-1]
    say(result.chosen()[["round", "layer", "widths", "params", "val_loss", "val_acc", "test_acc"]].to_string())
    say(f"stopped: {result.stop_reason}")
    say(f"planted: widths {result.model.widths}, {count_parameters(result.model):,} params, "
          f"test acc {kept['test_acc']:.4f}; history in {RunFolder.history(run)}")
    summary = {"teacher": teacher.meta | {"params": count_parameters(teacher)},
               "initial": initial.meta | {"params": count_parameters(initial)},
               "planted": {"widths": result.model.widths, "params": count_parameters(result.model),
                           "test_acc": float(kept["test_acc"]), "test_loss": float(kept["test_loss"])},
               "stop_reason": result.stop_reason, "parameters": params, "world_size": distributed.world_size()}
    write_json(summary, folder.root / "summary.json")
