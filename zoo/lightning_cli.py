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
import pickle
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from zoo.checkpoint import unsafe_checkpoint_message
from zoo.errors import ZooError

CKPT_ALIASES = ("last", "best", "hpc", "registry")


class _NoAdvert(logging.Filter):
    """Drops Lightning's "💡 Tip: ... install litlogger" line, printed on every run that logs elsewhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_lightning() -> None:
    """Keep the console to what concerns the run: no product tip, and no deprecation warning that
    Lightning 2.6's own pytree helper raises on every step under torch ≥ 2.11 (nothing a user can fix)."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvert) for f in log.filters):
        log.addFilter(_NoAdvert())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


class ZooCLI(LightningCLI):
    """`zoo fit|validate|test`: tasks from `zoo.tasks`, data from `zoo.data`, the Trainer from YAML."""

    def __init__(self, args=None, run: bool = True, **kwargs):
        quiet_lightning()
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

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        from zoo.callbacks import default_callbacks

        trainer_cfg = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
        given = trainer_cfg.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        extra = [cb for cb in default_callbacks() if not any(type(g) is type(cb) for g in given)]
        trainer_cfg["callbacks"] = given + extra
        return super().instantiate_trainer(**kwargs)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads the checkpoint's hyperparameters at parse time (weights_only=True); a file
        that pickles other objects fails there with torch's page-long message: say it in one line."""
        try:
            super()._parse_ckpt_path()
        except pickle.UnpicklingError as err:
            path = self.config[self.config.subcommand].get("ckpt_path")
            raise ZooError(unsafe_checkpoint_message(path)) from err

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
        family = checkpoint_family(read_checkpoint(ckpt))
        mine = getattr(getattr(self.model, "model", None), "family", None)
        if family and mine and family != mine:
            raise ZooError(f"checkpoint '{ckpt}' holds a {family} model but the config builds a {mine}; "
                           f"use a {mine} checkpoint or the {family} config")

    def before_fit(self) -> None:
        self._check_ckpt_path()

    def before_validate(self) -> None:
        self._check_ckpt_path()

    def before_test(self) -> None:
        self._check_ckpt_path()
