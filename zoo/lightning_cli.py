"""LightningCLI for zoo: tasks and data modules in subclass mode (chosen by `class_path` in YAML), the
vocabulary size linked from the data module into the model, and input checks that end in one line.

Every run gets `zoo.callbacks.default_callbacks()` (throughput/MFU, non-finite loss handling, random
state for exact resumption) unless its config lists a callback of the same class, which then wins.
`--ckpt_path last` finds the newest `last*.ckpt` of earlier runs (each run logs to a new version
folder, where Lightning's own "last" would look in vain). Checkpoints are loaded with
`weights_only=True` (tensors and plain data only: a file cannot run code); one that pickles other
objects is refused in one line.
"""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from zoo.checkpoint import unreadable_checkpoint_message
from zoo.errors import ZooError
from zoo.families import can, family_of
from zoo.models.base import Capability, ZooModel

CKPT_ALIASES = ("last", "best", "hpc", "registry")


class _NoAdvert(logging.Filter):
    """Drops Lightning's "💡 Tip: ... install litlogger" line, printed on every run that logs elsewhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("💡 Tip", "Trainer already configured with model summary"))


def quiet_lightning() -> None:
    """Keep the console to what concerns the run: no product tip, and no deprecation warning that
    Lightning 2.6's own pytree helper raises on every step under torch ≥ 2.11 (nothing a user can fix)."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvert) for f in log.filters):
        log.addFilter(_NoAdvert())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # DDP with find_unused_parameters=True (configs/trainer/cpu-ddp.yaml: BERT's pooler sits out masked-LM
    # steps) tells every rank when a model happens to use all its parameters: not a problem of the run
    warnings.filterwarnings("ignore", message=r".*find_unused_parameters=True was specified in DDP constructor")


def trim_help() -> None:
    """`--help` shows what a user can set: a `model: nn.Module` argument lists the zoo models, not every
    torch module (500 lines), other class lists stop after 8; a class's description is its whole first
    paragraph (jsonargparse keeps only the first line, cutting sentences). Idempotent."""
    import inspect

    from jsonargparse import _signatures, _typehints

    if getattr(_typehints.ActionTypeHint.extra_help, "_zoo", False):
        return
    original_extra, original_short = _typehints.ActionTypeHint.extra_help, _signatures.get_doc_short_description

    def extra_help(self) -> str:
        text = original_extra(self)
        head, sep, listed = text.partition(", known subclasses: ")
        if not sep:
            return text
        paths = listed.split(", ")
        shown = [p for p in paths if p.startswith("zoo.models.")] or [p for p in paths if p.startswith("zoo.")] or paths
        more = f", … ({len(paths) - 8} more)" if len(shown) > 8 else ""
        return head + sep + ", ".join(shown[:8]) + more

    def short_description(function_or_class, method_name=None, logger=None):
        short = original_short(function_or_class, method_name, logger=logger)
        target = getattr(function_or_class, method_name, None) if method_name else function_or_class
        for doc in (inspect.getdoc(target), inspect.getdoc(getattr(target, "__init__", None))):
            if short and doc and doc.startswith(short):
                return " ".join(doc.split("\n\n")[0].split())
        return short

    extra_help._zoo = True
    _typehints.ActionTypeHint.extra_help = extra_help
    _signatures.get_doc_short_description = short_description


def _without_ckpt_path(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if not skip and arg != "--ckpt_path" and not arg.startswith("--ckpt_path="):
            out.append(arg)
        skip = arg == "--ckpt_path"
    return out


def show_zoo_log() -> None:
    """Messages of the "zoo" logger (e.g. which weights `init_from` loaded) go to stderr."""
    log = logging.getLogger("zoo")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


class ZooCLI(LightningCLI):
    """`zoo fit|validate|test`: tasks from `zoo.tasks`, data from `zoo.data`, the Trainer from YAML."""

    def __init__(self, args=None, run: bool = True, **kwargs):
        quiet_lightning()
        show_zoo_log()
        trim_help()
        self._argv = [str(a) for a in (args if isinstance(args, list) else sys.argv[1:])]
        self._resume_step = 0
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"exit_on_error": False})
        super().__init__(
            L.LightningModule, L.LightningDataModule,
            subclass_mode_model=True, subclass_mode_data=True, args=args, run=run,
            auto_configure_optimizers=False, **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Every zoo family config has `vocab_size`; every text data module exposes the size of the
        # tokenizer it trained or loaded, known only once the data module exists.
        parser.link_arguments(
            "data.model_vocab_size", "model.init_args.model.init_args.config.vocab_size", apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        """Build the model's config dataclass once before anything else is instantiated, so that an
        impossible size (its `__post_init__` rules) is refused before the data and tokenizer are prepared."""
        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        spec = cfg.get("model") if cfg is not None else None
        task_args = spec.get("init_args") if hasattr(spec, "get") else None
        if self.subcommand in ("validate", "test") and hasattr(task_args, "get") and task_args.get("sample_prompt"):
            task_args["sample_prompt"] = ""  # the end-of-validation sample follows training, not an evaluation
        inner = spec.get("init_args", {}).get("model") if hasattr(spec, "get") else None
        if not hasattr(inner, "get") or not isinstance(inner.get("class_path"), str):
            return
        import importlib
        import typing

        module, _, name = inner["class_path"].rpartition(".")
        try:
            config_type = typing.get_type_hints(getattr(importlib.import_module(module), name).__init__)["config"]
        except (ImportError, AttributeError, KeyError, NameError, TypeError):
            return
        config_type = next((t for t in typing.get_args(config_type) if isinstance(t, type)), config_type)  # Optional[X]
        given = inner.get("init_args", {}).get("config")
        if isinstance(config_type, type) and hasattr(given, "as_dict"):
            fields = getattr(config_type, "__dataclass_fields__", {})
            config_type(**{k: v for k, v in given.as_dict().items() if k in fields and k != "vocab_size"})

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        from lightning.pytorch.callbacks import Checkpoint, ModelSummary, ProgressBar

        from zoo.callbacks import default_callbacks
        from zoo.interrupt import SaveOnInterrupt
        from zoo.progress import LastValidation, ModelTable, StepProgress
        from zoo.run_logs import with_tensorboard

        trainer_cfg = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
        given = trainer_cfg.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        defaults = default_callbacks()
        if self.subcommand in ("validate", "test"):  # read-only: no version folder, checkpoints or saved config
            given = [cb for cb in given if not isinstance(cb, Checkpoint)]
            trainer_cfg["logger"], trainer_cfg["enable_checkpointing"] = False, False
            self.save_config_callback = None
        else:
            defaults += [SaveOnInterrupt(), LastValidation()]
            trainer_cfg["logger"] = with_tensorboard(trainer_cfg.get("logger"))
            if trainer_cfg.get("enable_model_summary") is not False and not any(isinstance(g, ModelSummary) for g in given):
                defaults.append(ModelTable())
        if trainer_cfg.get("enable_progress_bar") is not False and not any(isinstance(g, ProgressBar) for g in given):
            defaults.append(StepProgress())
        extra = [cb for cb in defaults if not any(type(g) is type(cb) for g in given)]
        trainer_cfg["callbacks"] = given + extra
        return super().instantiate_trainer(**kwargs)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads the checkpoint's hyperparameters at parse time (weights_only=True); a file
        that pickles other objects fails there with torch's page-long message: say it in one line."""
        try:
            super()._parse_ckpt_path()
        except Exception as err:  # a text file, a truncated copy, pickled objects: one line from zoo.checkpoint
            path = self.config[self.config.subcommand].get("ckpt_path")
            if path is None or not Path(path).is_file():
                raise
            raise ZooError(unreadable_checkpoint_message(path, err)) from err

    def _resolve_last(self, cfg) -> None:
        """`--ckpt_path last` → the newest last*.ckpt in this run's checkpoint folders, all versions."""
        folders = {Path(cb.dirpath) for cb in self.trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
        logger = self.trainer.loggers[0] if self.trainer.loggers else None
        if logger is not None and logger.save_dir is not None:
            folders |= set((Path(logger.save_dir) / str(logger.name)).glob("*/checkpoints"))
        folders.add(Path(self.trainer.default_root_dir) / "checkpoints")
        found = [p for folder in folders for p in folder.glob("last*.ckpt")]
        if found:  # none: Lightning warns and starts fresh, so `--ckpt_path last` can be set and forgotten
            newest = str(max(found, key=lambda p: p.stat().st_mtime))
            cfg.ckpt_path = self.config_init[self.subcommand].ckpt_path = newest

    def _check_ckpt_path(self) -> None:
        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        ckpt = getattr(cfg, "ckpt_path", None) if cfg is not None else None
        if ckpt == "last" and self.subcommand:
            self._resolve_last(cfg)
            ckpt = cfg.ckpt_path
        if ckpt is None:
            return
        if getattr(cfg, "weights_only", None) is None:  # explicit: tensors and plain data only
            cfg.weights_only = self.config_init[self.subcommand].weights_only = True
        if ckpt in CKPT_ALIASES:
            return
        from zoo.checkpoint import checkpoint_family, is_sharded_checkpoint, read_checkpoint

        if not (Path(ckpt).is_file() or is_sharded_checkpoint(Path(ckpt))):
            raise ZooError(f"checkpoint '{ckpt}' does not exist; pass an existing .ckpt file or --ckpt_path last")

        if is_sharded_checkpoint(Path(ckpt)):
            from lightning.pytorch.strategies import ModelParallelStrategy

            if not isinstance(self.trainer.strategy, ModelParallelStrategy):
                raise ZooError(f"checkpoint '{ckpt}' is a folder of FSDP2/tensor-parallel shards, which only the "
                               "strategy that wrote it resumes: add its trainer config (e.g. -c "
                               "configs/trainer/cpu-fsdp.yaml); `zoo generate` and `init_from` read it anywhere")
        loaded = read_checkpoint(ckpt)
        self._resume_step = int(loaded.get("global_step", 0))
        family = checkpoint_family(loaded)
        mine = family_of(self.model.model).name if isinstance(getattr(self.model, "model", None), ZooModel) else None
        if family and mine and family != mine:
            raise ZooError(f"checkpoint '{ckpt}' holds a {family} model but the config builds a {mine}; "
                           f"use a {mine} checkpoint or the {family} config")

    def before_fit(self) -> None:
        from zoo.run_logs import align_versions, resume_in_version

        self._check_ckpt_path()
        ckpt = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt and Path(ckpt).exists() and self.trainer.loggers:
            resume_in_version(self.trainer.loggers, ckpt, self._resume_step)
        align_versions(self.trainer.loggers)

    def after_fit(self) -> None:
        """Say where the run went and what to run next; an interrupted run says how to resume, and exits
        with 128 + the signal number, as a killed process would."""
        from zoo.interrupt import SaveOnInterrupt

        stop = next((cb for cb in self.trainer.callbacks if isinstance(cb, SaveOnInterrupt)), None)
        if stop is not None and stop.signum is not None:
            if self.trainer.is_global_zero:
                args = _without_ckpt_path(self._argv)
                print(f"interrupted at step {self.trainer.global_step}: saved {stop.saved}\nresume: zoo "
                      + " ".join(shlex.quote(a) for a in args) + " --ckpt_path last", flush=True)
            raise SystemExit(128 + stop.signum)
        train = {k: v for k, v in self.trainer.callback_metrics.items() if k.startswith("train")}
        self._validate_final_step()  # resets callback_metrics to the validation's
        if self.trainer.is_global_zero:
            print("\n".join(self._summary(train)), flush=True)

    def _validate_final_step(self) -> None:
        """Validate the final weights when the run's last validation was earlier (short fine-tuning runs
        that never reached one), so the summary's val metrics describe what the checkpoint holds."""
        from zoo.progress import LastValidation

        seen = next((cb for cb in self.trainer.callbacks if isinstance(cb, LastValidation)), None)
        if seen is None or seen.step == self.trainer.global_step or not self.trainer.limit_val_batches:
            return
        if self.trainer.is_global_zero:
            print(f"validating the final weights (step {self.trainer.global_step})", flush=True)
        self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)

    def _summary(self, train_metrics: dict) -> list[str]:
        from zoo.progress import plot_losses, summary_lines

        # the running `zoo` command's table (as `python -m zoo.cli` it is __main__): no second import of it
        cli_module = sys.modules.get("zoo.cli") or sys.modules.get("__main__")
        commands = getattr(cli_module, "EXTRA_COMMANDS", {})

        # logger.log_dir, not trainer.log_dir: the trainer's broadcasts from rank 0 (a collective), and the
        # summary runs on rank 0 alone, so under DDP/FSDP it would wait for ranks that have already left
        log_dir = self.trainer.logger.log_dir if self.trainer.logger is not None else None
        png = plot_losses(Path(log_dir) / "metrics.csv", Path(log_dir) / "loss.png") if log_dir else None
        config = Path(log_dir) / "config.yaml" if log_dir else None
        net = getattr(self.model, "model", None)
        generates = isinstance(net, ZooModel) and (can(net, Capability.CAUSAL_LM) or can(net, Capability.SEQ2SEQ))
        return summary_lines(self.trainer, train_metrics, str(config) if config and config.is_file() else None,
                             generates, "export" in commands, png)

    def validate(self, **kwargs) -> list[dict]:
        return self._evaluate(self.trainer.validate, **kwargs)

    def test(self, **kwargs) -> list[dict]:
        return self._evaluate(self.trainer.test, **kwargs)

    def _evaluate(self, run, **kwargs) -> list[dict]:
        """Run validate/test quietly, then print its metrics as a two-column table."""
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`")  # no callbacks: read-only
        results = run(**{**kwargs, "verbose": False})
        if self.trainer.is_global_zero:
            rows = sorted({k: float(v) for r in results for k, v in r.items()}.items())
            width = max([len(k) for k, _ in rows] + [6])
            print(f"{'metric'.ljust(width)}  value")
            print("\n".join(f"{k.ljust(width)}  {v:.4g}" for k, v in rows), flush=True)
        return results

    def before_validate(self) -> None:
        self._check_ckpt_path()

    def before_test(self) -> None:
        self._check_ckpt_path()
