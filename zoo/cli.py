"""The `zoo` command.

    zoo fit|validate|test -c configs/gpt/nano.yaml [-c configs/trainer/cpu.yaml] [--key value ...]
    zoo generate --model runs/gpt-nano/.../last.ckpt --prompt "The "

`fit`, `validate` and `test` are LightningCLI: every YAML key is a typed `__init__` argument of the
task, the model, the data module or the Trainer, and `--print_config` shows them all. Other
commands are plain functions parsed by jsonargparse: their docstrings are their `--help`.
Input mistakes end with one line, `error: ...`, and exit status 2.
"""

from __future__ import annotations

import difflib
import re
import sys
from typing import Callable, Optional, Union

from zoo.compare import compare  # standard library only at import: the runs load when it is called
from zoo.errors import ZooError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def check_generate_arguments(max_new_tokens: int, temperature: Optional[float], top_k: Optional[int],
                             top_p: Optional[float], num_beams: int) -> None:
    """Refuse sampling settings that would silently do something else than asked."""
    if max_new_tokens < 1:
        raise ZooError(f"--max_new_tokens {max_new_tokens}: must be at least 1")
    if temperature is not None and temperature < 0:
        raise ZooError(f"--temperature {temperature}: must be 0 (greedy) or more; a negative temperature "
                       "would favour the least likely tokens")
    if top_k is not None and top_k < 1:
        raise ZooError(f"--top_k {top_k}: must be at least 1 (1 is greedy); use --top_k null for no filtering")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ZooError(f"--top_p {top_p}: must lie in (0, 1]; use --top_p null for no nucleus filtering")
    if num_beams < 1:
        raise ZooError(f"--num_beams {num_beams}: must be at least 1")


def warn_if_blank(text: str, tokenizer=None, prompt: str = "") -> bool:
    """Warn (on stderr) when the generated text (after `prompt`, where it starts with it) is only
    whitespace or special/end tokens, as an untrained or barely trained model produces; returns whether it warned."""
    text = text[len(prompt):] if prompt and text.startswith(prompt) else text
    specials = set()
    if tokenizer is not None:
        specials = {t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()
                    if t.startswith(("<", "[")) and t.endswith((">", "]"))}
    rest = text
    for token in specials:
        rest = rest.replace(token, "")
    if rest.strip():
        return False
    print("warning: the model generated only whitespace or end/special tokens; it is probably untrained or "
          "trained too briefly (train longer, or check the checkpoint)", file=sys.stderr)
    return True


def generate(
    model: str,
    prompt: str = "The ",
    max_new_tokens: int = 64,
    temperature: Optional[float] = None,
    top_k: Optional[int] = 50,
    top_p: Optional[float] = None,
    seed: int = 0,
    use_cache: bool = True,
    device: str = "cpu",
    num_beams: int = 1,
    quantize: Optional[str] = None,
) -> str:
    """Continue a prompt with a trained model (GPT), or transform it with an encoder-decoder (T5, BART).

    Args:
        model: a `.ckpt` file written by `zoo fit`, a Hugging Face checkpoint directory, or a hub name.
        prompt: the text to continue.
        max_new_tokens: how many tokens to add.
        temperature: sampling temperature; 0 decodes greedily. Default: 0.8 for decoder-only models
            (GPT), greedy (or beam search) for encoder-decoders (T5, BART), which sample only when
            given a temperature above 0.
        top_k: sample among the k most likely tokens (null for all).
        top_p: nucleus sampling: the smallest set with this much probability (null for off).
        seed: random seed, for repeatable samples.
        use_cache: reuse past keys and values (KV cache); the output is the same, only faster.
        device: "cpu", "cuda", ...
        num_beams: beam search with more than 1 (not combined with sampling). Decoder-only models
            print prompt + continuation; encoder-decoders read the prompt as the encoder input and
            print the decoder output.
        quantize: quantize the model with torchao before decoding: "int8-weight", "int8-dynamic"
            (CPU or CUDA), "int4-weight", "float8" (CUDA); see `zoo quantize`.
    """
    check_generate_arguments(max_new_tokens, temperature, top_k, top_p, num_beams)
    if quantize is not None:
        from zoo.compress.quantize import check_quantize_option

        check_quantize_option(quantize, device, [model])  # before loading: scheme, device, torchao, not twice
    from zoo.checkpoint import load_model
    from zoo.generation import Request, generate_batch, stepper_class

    net, tokenizer = load_model(model)
    if tokenizer is None:
        raise ZooError(f"'{model}' carries no tokenizer; save tokenizer.json beside the weights")
    try:
        kind = stepper_class(net)
    except ZooError as err:
        raise ZooError(f"'{model}': {err}; zoo generate cannot run it") from None
    net = net.to(device)
    if quantize is not None:
        from zoo.compress.quantize import quantize as quantize_model

        net = quantize_model(net, quantize)
    temperature = kind.default_temperature if temperature is None else temperature
    if temperature > 0 and num_beams > 1:
        raise ZooError(f"--temperature {temperature} samples, --num_beams {num_beams} runs beam search; "
                       "pick one (--temperature 0 for beam search, --num_beams 1 to sample)")
    request = Request(prompt, max_new_tokens, temperature, top_k, top_p, seed)
    try:
        [done] = generate_batch(net, tokenizer, [request], use_cache=use_cache, echo=True, num_beams=num_beams)
    except ValueError as err:  # a prompt longer than the context
        raise ZooError(str(err)) from None
    warn_if_blank(done.text, tokenizer, prompt)
    print(done.text)
    return done.text


def inspect(
    model: str,
    text: str,
    layer: int = 0,
    head: int = 0,
    top_k: int = 5,
    out_dir: str = "inspect",
    max_values: int = 4,
    decoder_text: str = "",
    image: Optional[str] = None,
    stack: Optional[str] = None,
) -> None:
    """Walk one forward pass of a model step by step, as a textbook does.

    Prints the tokens and their ids, the embeddings, each layer's normalised input, Q/K/V, the MLP,
    the attention scores and weights of one layer and head (tables; heatmaps of every head), and the
    top-k predictions with their probabilities.

    Args:
        model: a `.ckpt` file written by `zoo fit`, a Hugging Face checkpoint directory, or a hub name.
        text: GPT: the text to continue. BERT: a text with [MASK] where a word is missing. T5, BART:
            the encoder input. CLIP: candidate captions separated by `|`.
        layer: the layer whose attention is printed as tables and saved as heatmaps.
        head: the head whose scores and weights are printed.
        top_k: how many predictions to list.
        out_dir: folder for the attention heatmaps (PNG, every head of the chosen layer).
        max_values: how many first values of each vector to print.
        decoder_text: T5, BART: decoder tokens already generated; the next one is predicted.
        image: CLIP: an image file, or `digits:<index>` for scikit-learn's handwritten digits.
        stack: show the attention of this stack only (e.g. encoder, decoder, vision_model, text_model);
            default every stack.
    """
    from zoo.inspection import inspect_model

    inspect_model(model, text, layer, head, top_k, out_dir, max_values, decoder_text, image, stack)


# The other commands, as "module:attribute", imported when run: `zoo --help` and `zoo generate` do not pay
# for Lightning, datatrove, torchao, FastAPI or lm_eval (each of those loads on use inside its command).
EXTRA_COMMANDS: dict[str, Union[Callable, str]] = {
    "generate": generate, "inspect": inspect, "compare": compare,
    "data": "zoo.data.prepare:DataCommands",  # zoo data prepare|report
    "export": "zoo.interop.export:export",  # HF / ONNX / PEFT
    "serve": "zoo.serve:serve",
    "evaluate": "zoo.evaluation.command:evaluate",
    "quantize": "zoo.compress.commands:quantize",
    "prune": "zoo.compress.commands:prune",
}


def command(name: str) -> Callable:
    """The function (or class) behind `zoo NAME`, imported on first use."""
    target = EXTRA_COMMANDS[name]
    if isinstance(target, str):
        import importlib

        module, _, attr = target.partition(":")
        target = EXTRA_COMMANDS[name] = getattr(importlib.import_module(module), attr)
    return target


def _known_keys() -> list[str]:
    """Names a config may use, for "did you mean" hints."""
    import dataclasses
    import inspect

    import lightning as L

    from zoo.families import FAMILIES

    keys: set[str] = set()
    for family in FAMILIES.values():
        keys |= {f.name for f in dataclasses.fields(family.config)}
    for obj in (L.Trainer.__init__,):
        keys |= set(inspect.signature(obj).parameters)
    import zoo.data as data
    import zoo.tasks as tasks

    for mod in (tasks, data):
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isclass(obj):
                keys |= set(inspect.signature(obj.__init__).parameters)
    return sorted(keys - {"self", "args", "kwargs"})


_NOISE = ("- Expected a <class 'NoneType'>", "Given value", "Subtypes", "Errors", "Parser key", "Problem with given",
          "Does not validate against", "Problems parsing config")


def _readable_type_error(line: str) -> str:
    """"Expected a <class 'int'>. Got value: abc" → "expects int, got 'abc'"."""
    m = re.match(r"Expected a <class '([^']+)'>\. Got value: (.*)", line)
    return f"expects {m.group(1)}, got {m.group(2)!r}" if m else line


def summarize_parse_error(message: str) -> str:
    """Turn jsonargparse's nested report into one line naming the bad key and a fix."""
    m = re.search(r"does not accept (?:option|nested key) '([^']+)'", message) or re.search(
        r"Key '([^']+)' is not expected", message) or re.search(r"Option '([^']+)' is not accepted", message) or re.search(
        r"unrecognized arguments: (\S+)", message, re.I)
    if m:
        bad = m.group(1).lstrip("-").split(".")[-1].split("=")[0]
        close = difflib.get_close_matches(bad, _known_keys(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown config key '{bad}': {hint}check its spelling (`zoo fit --print_config` lists every key)"
    key, deepest = None, None
    for raw in message.splitlines():
        line = raw.strip()
        found = re.match(r'Parser key "([^"]+)"', line)
        if found:
            key = found.group(1)
        elif line and not line.startswith(_NOISE) and not line.startswith("- Expected a <class 'NoneType'>"):
            deepest = line.removeprefix("- ")
    deepest = deepest or message.strip().splitlines()[-1] if message.strip() else message
    if key:
        return f"invalid value for '{key}': {_readable_type_error(deepest)} (`zoo fit --help` lists the options)"
    return f"invalid configuration: {deepest} (run with --help to see the accepted options)"


def check_config_files(argv: list[str]) -> None:
    """Each `-c/--config FILE` exists and is valid YAML: say which file and where it breaks."""
    import yaml

    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg in ("-c", "--config") and i + 1 < len(argv) else None
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        if path is None or path.lstrip().startswith(("{", "[")):
            continue
        from pathlib import Path

        if not Path(path).is_file():
            raise ZooError(f"config file '{path}' does not exist; pass a YAML file such as configs/gpt/nano.yaml")
        try:
            yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ZooError(f"config file '{path}' is not UTF-8 text; pass a YAML file") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ZooError(f"config file '{path}' is not valid YAML{where}: {problem}") from None


def user_error(err: BaseException) -> Optional[ZooError]:
    """The ZooError behind an exception: jsonargparse and Lightning wrap what a constructor raised."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ZooError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _run_lightning(argv: Optional[list[str]]) -> None:
    from zoo.lightning_cli import ZooCLI

    ZooCLI(args=argv)  # None: LightningCLI reads sys.argv itself


def main(argv: Optional[list[str]] = None) -> int:
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(LIGHTNING_COMMANDS + tuple(EXTRA_COMMANDS)) + "   (zoo COMMAND --help)")
        return 0
    try:
        check_config_files(argv)
        if argv[0] in EXTRA_COMMANDS:
            from jsonargparse import CLI

            args = ["--config" if arg == "-c" else arg for arg in argv[1:]]  # -c as for fit
            if argv[0] == "evaluate":  # --model a b c: several values after one flag
                from zoo.evaluation.command import gather_lists

                args = gather_lists(args)
            CLI(command(argv[0]), args=args, as_positional=False, parser_mode="yaml",
                exit_on_error=False, prog=f"zoo {argv[0]}")
        else:
            _run_lightning(None if from_sys else argv)
    except Exception as err:
        from jsonargparse import ArgumentError

        mistake = user_error(err)
        if mistake is not None:
            print(f"error: {mistake}", file=sys.stderr)
            return 2
        if isinstance(err, ArgumentError):
            print(f"error: {summarize_parse_error(str(err))}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
