"""The `zoo` command: every config parses, training round-trips through a checkpoint, and each
input mistake ends in one readable line with exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli.conftest import tiny_fit_args
from zoo.cli import main, summarize_parse_error

ROOT = Path(__file__).resolve().parents[2]
FAMILY_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name not in ("trainer", "data"))
DATA_CONFIGS = sorted((ROOT / "configs" / "data").glob("*.yaml"))
TRAINER_CONFIGS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))


def one_error_line(capsys):
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("config", FAMILY_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", str(config), "--print_config"])
    assert exit_.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


@pytest.mark.parametrize("config", DATA_CONFIGS, ids=lambda p: p.name)
def test_every_data_pipeline_config_parses(config, capsys):
    """configs/data/*.yaml are `zoo data prepare` configs, not training configs."""
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "-c", str(config), "--print_config"])
    assert exit_.value.code in (0, None)
    assert "output:" in capsys.readouterr().out


@pytest.mark.parametrize("trainer", TRAINER_CONFIGS, ids=lambda p: p.name)
def test_trainer_configs_stack_on_a_family_config(trainer, capsys):
    import yaml

    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", str(ROOT / "configs/gpt/nano.yaml"), "-c", str(trainer), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["trainer"]
    given = yaml.safe_load(trainer.read_text())["trainer"]
    for key, value in given.items():  # the later config wins key by key; the family's other keys stay
        if key == "strategy" and isinstance(value, dict):
            assert printed["strategy"]["class_path"] == value["class_path"]
            assert all(printed["strategy"]["init_args"][k] == v for k, v in value.get("init_args", {}).items())
        else:
            assert printed[key] == value, key
    assert printed["max_steps"] == yaml.safe_load((ROOT / "configs/gpt/nano.yaml").read_text())["trainer"]["max_steps"]


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit" in out and "generate" in out


def test_task_help_explains_options(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "zoo.tasks.CausalLM"])
    out = capsys.readouterr().out
    assert "sample_prompt" in out and "end-of-validation sample" in out


def test_misspelt_key_in_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs/gpt/nano.yaml").read_text().replace("n_layer:", "n_layr:"))
    assert main(["fit", "-c", str(bad)]) == 2
    line = one_error_line(capsys)
    assert "n_layr" in line and "did you mean 'n_layer'" in line


def test_misspelt_key_on_command_line(capsys):
    assert main(["fit", "-c", str(ROOT / "configs/gpt/nano.yaml"), "--trainer.max_stepz", "3"]) == 2
    assert "max_stepz" in one_error_line(capsys)


def test_summarize_keeps_unknown_errors_short():
    msg = "Parser key \"x\":\n  Errors:\n    - Expected a <class 'NoneType'>\n  Value 'abc' is not an int"
    assert summarize_parse_error(msg).startswith("invalid value for 'x': Value 'abc' is not an int")  # names the key
    assert summarize_parse_error("Value 'abc' is not an int").startswith("invalid configuration: Value 'abc'")


@pytest.mark.parametrize("kind", ["missing", "empty", "binary", "not-utf8"])
def test_bad_corpus_is_one_line(kind, tmp_path, cache_dir, capsys):
    path = tmp_path / "corpus.txt"
    if kind == "empty":
        path.write_text("")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "not-utf8":
        path.write_bytes("café au lait, naïve résumé, déjà vu ".encode("latin-1") * 50)
    args = tiny_fit_args(tmp_path / "run", cache_dir) + ["--data.init_args.source", str(path)]
    assert main(args) == 2
    line = one_error_line(capsys)
    reason = {"missing": "does not exist", "empty": "is empty (no text", "binary": "looks binary",
              "not-utf8": "is not valid UTF-8"}[kind]
    assert path.name in line and reason in line, line


def test_fit_checkpoint_generate_round_trip(trained_checkpoint, capsys):
    from zoo.checkpoint import model_from_checkpoint

    ckpt = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["zoo"]["family"] == "gpt" and ckpt["zoo"]["config"]["d_model"] == 32
    model, tokenizer = model_from_checkpoint(trained_checkpoint)
    assert tokenizer is not None and model.config.vocab_size == tokenizer.get_vocab_size()
    capsys.readouterr()
    argv = ["generate", "--model", str(trained_checkpoint), "--prompt", "The", "--max_new_tokens", "5"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and first.startswith("The")  # seeded: the same text twice
    assert (trained_checkpoint.parent.parent / "tokenizer.json").is_file()


def test_validate_from_checkpoint(trained_checkpoint, tmp_path, cache_dir):
    args = tiny_fit_args(tmp_path, cache_dir)
    args[0] = "validate"
    assert main(args + ["--ckpt_path", str(trained_checkpoint)]) == 0


def test_prompt_longer_than_context(trained_checkpoint, capsys):
    assert main(["generate", "--model", str(trained_checkpoint), "--prompt", "word " * 200]) == 2
    assert "context is 32" in one_error_line(capsys)


def test_missing_checkpoints(tmp_path, cache_dir, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope.ckpt")]) == 2
    assert "does not exist" in one_error_line(capsys)
    args = tiny_fit_args(tmp_path, cache_dir) + ["--ckpt_path", str(tmp_path / "gone.ckpt")]
    assert main(args) == 2
    assert "gone.ckpt" in one_error_line(capsys)


def test_checkpoint_of_another_family(tmp_path, cache_dir, capsys):
    other = tmp_path / "bert.ckpt"
    torch.save({"zoo": {"family": "bert", "config": {}}, "state_dict": {}}, other)
    assert main(tiny_fit_args(tmp_path, cache_dir) + ["--ckpt_path", str(other)]) == 2
    assert "holds a bert model" in one_error_line(capsys)


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", "generate", "--model", str(tmp_path / "x.ckpt")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:")


def test_lightning_product_tip_is_dropped_and_other_info_kept():
    import logging

    from zoo.lightning_cli import quiet_lightning

    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        quiet_lightning()
        quiet_lightning()  # idempotent: one filter
        log.info("💡 Tip: For seamless cloud logging, try installing litlogger")
        log.info("GPU available: False, used: False")
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert seen == ["GPU available: False, used: False"]
    assert sum(type(f).__name__ == "_NoAdvert" for f in log.filters) == 1


def test_checkpoints_that_pickle_objects_are_refused(trained_checkpoint, tmp_path, cache_dir, capsys):
    """Checkpoints load with weights_only=True: one that pickles an arbitrary object is refused in one
    line by every command, while the same checkpoint without it loads."""
    import datetime

    ckpt = torch.load(trained_checkpoint, weights_only=True)
    ckpt["made"] = datetime.datetime(2026, 1, 1)  # not a tensor or plain data: outside weights_only
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(ckpt, unsafe)
    args = tiny_fit_args(tmp_path / "run", cache_dir)
    args[0] = "validate"
    for argv in (args + ["--ckpt_path", str(unsafe)], ["generate", "--model", str(unsafe)]):
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert "unsafe.ckpt" in line and "weights_only=True" in line
    del ckpt["made"]
    torch.save(ckpt, unsafe)
    assert main(args + ["--ckpt_path", str(unsafe)]) == 0
