"""What a new user sees: a fit that says where it went and what to run next, progress in steps (plain
lines when the output is not a terminal), TensorBoard and a loss PNG, read-only validation, trimmed
help, byte-level symbols explained, init_from confirmed, and a warning for blank generations."""

import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.cli.conftest import TINY, tiny_fit_args
from zoo.cli import main, warn_if_blank

ROOT = Path(__file__).resolve().parents[2]


def test_fit_ends_with_a_summary_tensorboard_and_loss_png(tmp_path, cache_dir, capfd, caplog):
    args = tiny_fit_args(tmp_path, cache_dir) + ["--trainer.max_steps", "3", "--trainer.enable_model_summary", "true"]
    assert main(args) == 0
    out, err = capfd.readouterr()
    version = tmp_path / "logs" / "version_0"
    last = version / "checkpoints" / "last.ckpt"
    assert f"last checkpoint:  {last}" in out and "best checkpoint:  " + str(version / "checkpoints") in out
    assert re.search(r"train: train/loss \d", out) and re.search(r"val: +val/loss \d", out)
    assert f"logs:  {version}" in out and (version / "loss.png").stat().st_size > 1000
    assert "zoo generate --model " in out and f"zoo validate -c {version / 'config.yaml'} --ckpt_path" in out
    assert list(version.glob("events.out.tfevents.*")) and (version / "metrics.csv").is_file()  # TensorBoard beside CSV
    # step 3 is past the last validation (step 2): the final weights were validated for the summary
    assert "validating the final weights (step 3)" in out
    logged = out + err + caplog.text
    assert "Total FLOPs" not in logged and "parameters: 26.6 K" in logged  # the model summary shows no zero FLOPs


def test_plain_progress_lines_count_steps_and_continue_after_a_resume(trained_checkpoint, tmp_path, cache_dir, capfd):
    """Under pytest stdout is not a terminal: lines, not a bar; a resumed run counts on from its step."""
    ckpt = tmp_path / "start.ckpt"
    shutil.copy(trained_checkpoint, ckpt)  # outside its run folder: the resumed run logs under tmp_path
    progress = "{class_path: zoo.progress.StepProgress, init_args: {every_n_steps: 2}}"
    args = tiny_fit_args(tmp_path, cache_dir) + ["--trainer.enable_progress_bar", "true", "--trainer.max_steps", "8",
                                                 "--trainer.callbacks+", progress, "--ckpt_path", str(ckpt)]
    assert main(args) == 0
    lines = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["6/8", "8/8"], lines
    assert re.fullmatch(r"step 6/8  loss \d+\.\d{3}  tokens/s [\d,]+  ETA 0m\d\ds", lines[0]), lines[0]
    assert "v_num" not in "\n".join(lines)


def test_validate_is_read_only_and_prints_a_table(trained_checkpoint, tmp_path, cache_dir, capfd):
    args = tiny_fit_args(tmp_path, cache_dir)
    args[0] = "validate"
    assert main(args + ["--ckpt_path", str(trained_checkpoint)]) == 0
    out, err = capfd.readouterr()
    assert not (tmp_path / "logs").exists() and not list(tmp_path.glob("*.yaml"))  # no version folder, no config
    assert re.search(r"^val/loss +\d+\.\d+$", out, re.M) and re.search(r"^val/ppl +\d", out, re.M)
    assert "[sample @" not in out and "dirpath" not in err and "Be aware that when using" not in err


def test_help_is_trimmed(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "zoo.tasks.CausalLM"])
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 120 and "torch.nn.Linear" not in out and "zoo.models.GPT" in out
    assert "writes a short sample at the end of each validation" in " ".join(out.split())  # not cut at "writes a"


def test_inspect_explains_byte_level_symbols(trained_checkpoint, tmp_path, capsys):
    assert main(["inspect", "--model", str(trained_checkpoint), "--text", "The class\n", "--out_dir",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Ġ is a space, Ċ a newline" in out
    assert re.search(r"'Ġ\w+'\s+\(' \w+'\)", out) and "('\\n')" in out  # a symbol and the text it stands for


def test_blank_generation_warns(trained_checkpoint, capsys, monkeypatch):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(torch.load(trained_checkpoint, weights_only=True)["zoo"]["tokenizer"])
    eos, space = tok.token_to_id("<|endoftext|>"), tok.encode(" ").ids
    assert warn_if_blank(tok.decode([eos] * 3 + space * 2, skip_special_tokens=False), tok)
    assert not warn_if_blank(" def main():", tok)
    assert "only whitespace or end/special tokens" in capsys.readouterr().err

    import types

    import zoo.generation

    def only_spaces(net, tokenizer, requests, **kw):  # a model that learned only spaces
        ids = tokenizer.encode(requests[0].prompt).ids + space * 4
        return [types.SimpleNamespace(token_ids=ids, text=tokenizer.decode(ids))]

    monkeypatch.setattr(zoo.generation, "generate_batch", only_spaces)
    assert main(["generate", "--model", str(trained_checkpoint), "--prompt", "The"]) == 0
    assert "warning: the model generated only whitespace" in capsys.readouterr().err


def test_fine_tuning_short_run_validates_and_names_init_from(trained_checkpoint, tmp_path, cache_dir, capfd, caplog):
    keep = [not (a.startswith(("--data.", "--model.init_args.sample")) or TINY[i - 1].startswith(
        ("--data.", "--model.init_args.sample"))) for i, a in enumerate(TINY)]
    sizes = [a for a, k in zip(TINY, keep) if k]  # the classification task and data module have their own keys
    args = ["fit", "-c", "configs/gpt/classify.yaml", *sizes, "--trainer.max_steps", "2",
            "--model.init_args.init_from", str(trained_checkpoint), "--data.init_args.tokenizer", str(trained_checkpoint),
            "--data.init_args.max_length", "32", "--data.init_args.batch_size", "4",
            "--data.init_args.max_per_topic", "8", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger.init_args.save_dir", str(tmp_path)]
    assert main(args) == 0
    out, err = capfd.readouterr()
    said = err + caplog.text  # the "zoo" logger: on stderr for a user, in caplog under pytest
    assert re.search(r"init_from: loaded \d+ weight tensors from '" + re.escape(str(trained_checkpoint)), said), said
    assert re.search(r"val: +val/acc \d", out), out[-2000:]


def test_terminal_bar_counts_steps_from_the_resumed_step(trained_checkpoint, tmp_path, cache_dir, capfd):
    ckpt = tmp_path / "start.ckpt"
    shutil.copy(trained_checkpoint, ckpt)  # step 4
    bar = "{class_path: zoo.progress.StepProgress, init_args: {plain: false}}"
    args = tiny_fit_args(tmp_path, cache_dir) + ["--trainer.enable_progress_bar", "true", "--trainer.max_steps", "6",
                                                 "--trainer.callbacks+", bar, "--ckpt_path", str(ckpt)]
    assert main(args) == 0
    frames = capfd.readouterr().err.replace("\r", "\n").splitlines()
    steps = [m.group(1) for m in (re.search(r"step: +\d+%\|[^|]*\| *(\d+/\d+)", f) for f in frames) if m]
    assert steps and steps[0] == "4/6" and steps[-1] == "6/6", steps  # counts on from the checkpoint's step
    assert not any("Epoch" in f or "v_num" in f for f in frames)
