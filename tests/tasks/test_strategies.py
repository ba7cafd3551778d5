"""Training strategies through `zoo fit` and the trainer configs: DDP, FSDP2 and tensor parallel on 2 CPU
processes (gloo) train like one process on the same global batch; gradient clipping, accumulation,
precision, compile and activation checkpointing from YAML take effect.

The runs happen in subprocess sessions shared by the tests of this module, each running several `zoo fit`
commands (`strategy_run_helper.py`): one process (the references; it also trains the tokenizers), then
2 processes started as torchrun would, beside one process compiling with inductor. Compared: the
validation loss after each of 3 optimizer steps, a token-weighted mean over the same 16 validation
examples on every setup (1 process × 2 batches of 2B, or 2 ranks × 2 batches of B), and every parameter
after the last step. SGD, not Adam: Adam's normalisation would hide a gradient off by a constant factor.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("strategy_run_helper.py")
B = 4  # examples per data-parallel rank; the single-process reference reads 2·B
STEPS = 3

pytestmark = pytest.mark.slow

FAMILIES = {
    "gpt": ("configs/gpt/nano.yaml", {"max_seq_len": 32, "d_model": 32, "n_layer": 2, "n_head": 2, "dropout": 0.0},
            {"sample_tokens": 4}),  # sampling after each validation: on every rank when the model is sharded
    # Token (not whole-word) masking: round(15%) of each full 32-token chunk, the same count in every
    # example, so a mean over a rank's masked tokens composes into the global mean exactly.
    "bert": ("configs/bert/tiny.yaml", {"max_seq_len": 32, "d_model": 32, "n_layer": 2, "n_head": 2, "d_ff": 64,
                                        "dropout": 0.0, "attn_dropout": 0.0}, {}),
    # T5 under tensor parallel: cross-attention, and the relative-position bias table split by heads.
    "t5": ("configs/t5/tiny.yaml", {"d_model": 32, "d_kv": 16, "d_ff": 64, "n_layer": 2, "n_head": 2, "dropout": 0.0},
           {"generate_batches": 0}),
    # Fine-tuning: the classifier head lives in the task, outside the model, and must be sharded and
    # reduced with it; the features come from a method (`pooled`), not `forward`.
    "bert-cls": ("configs/bert/classify.yaml", {"max_seq_len": 32, "d_model": 32, "n_layer": 2, "n_head": 2,
                                                "d_ff": 64, "dropout": 0.0, "attn_dropout": 0.0},
                 {"classifier_dropout": 0.0}),
}
# LoRA on every linear layer of the blocks (column- and row-parallel alike), the head trained too
# (tests/adapters/test_lora_strategies.py runs it)
FAMILIES["bert-cls-lora"] = (*FAMILIES["bert-cls"][:2], {"classifier_dropout": 0.0,
                                                          "lora": {"r": 4, "alpha": 8, "targets": "all-linear"}})
DATA = {"bert-cls": {"max_length": 32, "max_per_topic": 16, "vocab_size": 512}}  # else: the pre-training data
DATA["bert-cls-lora"] = DATA["bert-cls"]
BATCH = {"ddp": B, "fsdp": B, "tp": 2 * B}  # tensor-parallel ranks share one batch: the global batch is its size
PAIRS = [("gpt", s) for s in BATCH] + [("bert", s) for s in BATCH] + [("t5", "tp"), ("bert-cls", "fsdp"), ("bert-cls", "tp")]


def common_config(family: str, tmp: Path) -> dict:
    """Overrides on the family's config: a tiny fp32 model, plain SGD with clipping (Adam would hide
    a wrong gradient scale), 3 steps with a validation after each, no checkpoints."""
    _, model, task = FAMILIES[family]
    data = {**DATA.get(family, {"vocab_size": 512, "block_size": 32}), "cache_dir": str(tmp / "cache")}
    if family == "bert":
        data["whole_word_masking"] = False
    return {
        "seed_everything": 1234,
        "trainer": {"max_steps": STEPS, "val_check_interval": 1, "limit_val_batches": 2, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
                    "gradient_clip_val": 0.5, "deterministic": True, "callbacks": []},
        "model": {"init_args": {"model": {"init_args": {"config": model}}, "warmup_steps": 0, "schedule": "constant",
                                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 1.0}}, **task}},
        "data": {"init_args": data},
    }


def fit_args(family: str, trainer: str, name: str, tmp: Path, batch: int, **extra) -> list[str]:
    """`zoo fit -c <family> -c configs/trainer/<trainer>.yaml -c <overrides>` logging to tmp/name."""
    run = {"trainer": {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                  "init_args": {"save_dir": str(tmp / name), "name": "logs"}},
                       "default_root_dir": str(tmp / name),
                       "callbacks": [{"class_path": "strategy_run_helper.RecordLayout",
                                      "init_args": {"path": str(tmp / name / "layout.json")}},
                                     {"class_path": "strategy_run_helper.SaveWeights",
                                      "init_args": {"path": str(tmp / name / "weights.pt")}}]},
           "data": {"init_args": {"batch_size": batch}}}
    for key, value in extra.items():  # trainer.accumulate_grad_batches=2, model.compile=true, ...
        section, option = key.split("__")
        target = run["trainer"] if section == "trainer" else run.setdefault(section, {}).setdefault("init_args", {})
        target[option] = value
    (tmp / name).mkdir(parents=True)
    (tmp / name / "run.yaml").write_text(yaml.safe_dump(run))
    common = tmp / f"{family}.yaml"
    if not common.exists():
        common.write_text(yaml.safe_dump(common_config(family, tmp)))
    return ["fit", "-c", FAMILIES[family][0], "-c", f"configs/trainer/{trainer}.yaml", "-c", str(common),
            "-c", str(tmp / name / "run.yaml")]


def val_losses(tmp: Path, name: str) -> list[float]:
    rows = list(csv.DictReader((tmp / name / "logs" / "version_0" / "metrics.csv").open()))
    return [float(r["val/loss"]) for r in rows if r.get("val/loss")]


def start(runs: list[list[str]], tmp: Path, label: str, world: int = 1) -> list[subprocess.Popen]:
    """Start the helper once (world=1) or as `world` processes of one process group, like torchrun."""
    (tmp / f"{label}.json").write_text(json.dumps(runs))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = []
    for rank in range(world):
        if world > 1:
            env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                   "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0"}
        log = (tmp / f"{label}-{rank}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, str(HELPER), str(tmp / f"{label}.json")], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
    return procs


def finish(procs: list[subprocess.Popen], tmp: Path, label: str) -> None:
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, code in enumerate(codes):
        assert code == 0, (tmp / f"{label}-{rank}.log").read_text()[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, and the layouts its parameters had while training."""
    tmp = tmp_path_factory.mktemp("strategies")
    single = [
        fit_args("gpt", "cpu", "gpt-single", tmp, 2 * B),
        fit_args("bert", "cpu", "bert-single", tmp, 2 * B),
        fit_args("t5", "cpu", "t5-single", tmp, 2 * B),
        fit_args("bert-cls", "cpu", "bert-cls-single", tmp, 2 * B),
        fit_args("bert", "cpu", "bert-accumulate", tmp, B, trainer__accumulate_grad_batches=2,
                 trainer__val_check_interval=2, trainer__limit_val_batches=4),  # 3 steps, the same 16 val examples
        fit_args("bert", "cpu", "bert-noclip", tmp, 2 * B, trainer__gradient_clip_val=None),
        fit_args("bert", "cpu", "bert-bf16", tmp, 2 * B, trainer__precision="bf16-mixed"),
    ]
    finish(start(single, tmp, "single"), tmp, "single")  # first: it trains the tokenizers the others read
    multi = [fit_args(f, f"cpu-{s}", f"{f}-{s}", tmp, BATCH[s]) for f, s in PAIRS]
    multi.append(fit_args("bert", "cpu-fsdp", "bert-fsdp-accumulate", tmp, B // 2, trainer__accumulate_grad_batches=2,
                          trainer__val_check_interval=2, trainer__limit_val_batches=4))
    # Inductor's compile is most of its session's time: it runs beside the 2-process session.
    compiled = [fit_args("gpt", "cpu", "gpt-compile-ckpt", tmp, 2 * B, model__compile=True,
                         model__activation_checkpointing=True,
                         model__sample_prompt="")]  # no sampling: decoding steps of every length would recompile
    compiling = start(compiled, tmp, "compiled")
    try:
        finish(start(multi, tmp, "multi", world=2), tmp, "multi")
    finally:
        finish(compiling, tmp, "compiled")
    names = [Path(argv[-1]).parent.name for argv in single + compiled + multi]
    return SimpleNamespace(
        loss={n: val_losses(tmp, n) for n in names},
        layout={n: json.loads((tmp / n / "layout.json").read_text()) for n in names},
        weights=lambda n: torch.load(tmp / n / "weights.pt", weights_only=True),
        compiled_graphs=lambda n: json.loads((tmp / n / "weights.json").read_text())["compiled_graphs"],
    )


def assert_close(got: list[float], want: list[float], tol: float) -> None:
    assert len(got) == len(want) == STEPS, (got, want)
    assert max(abs(g - w) for g, w in zip(got, want)) <= tol, (got, want)


def test_strategies_through_zoo_fit(runs):
    """Every check below, on one set of runs. One pytest item, so that xdist gives it to one worker and
    the runs happen once (this pytest-xdist does not honour `xdist_group` here); each check still reports."""
    checks = {f"{f} under {s} trains like one process": (check_two_processes, f, s) for f, s in PAIRS}
    checks.update({f"{f} parameters laid out per strategy": (check_layouts, f) for f in ("gpt", "bert")})
    checks["clipping, accumulation and precision from YAML"] = (check_trainer_options,)
    checks["accumulation and clipping under FSDP2"] = (check_fsdp_accumulation,)
    checks["compile and activation checkpointing"] = (check_compile_and_checkpointing,)
    failures = []
    for name, (check, *args) in checks.items():
        try:
            check(runs, *args)
        except AssertionError as err:
            failures.append(f"{name}: {err}")
    assert not failures, "\n".join(failures)


def check_two_processes(runs, family, strategy):
    """The losses after each step, and every parameter after the last, equal one process's."""
    assert_close(runs.loss[f"{family}-{strategy}"], runs.loss[f"{family}-single"], 1e-4)
    start, want = runs.weights(f"{family}-single")["start"], runs.weights(f"{family}-single")["end"]
    got = runs.weights(f"{family}-{strategy}")["end"]
    assert sorted(got) == sorted(want)
    assert max((want[n] - start[n]).abs().max() for n in want) > 0.05  # training moved: the match is not trivial
    worst = max(want, key=lambda n: (got[n] - want[n]).abs().max())
    assert (got[worst] - want[worst]).abs().max() <= 1e-5, worst


def check_layouts(runs, family):
    """DDP keeps whole parameters; FSDP2 shards every one over the data-parallel axis; tensor parallel
    splits q/k/v and the MLP's up projection by rows, o and down projections by columns."""
    ddp, fsdp, tp = (runs.layout[f"{family}-{s}"] for s in ("ddp", "fsdp", "tp"))
    q = next(n for n in ddp if n.endswith("self_attn.q_proj.weight"))
    o, down = q.replace("q_proj", "o_proj"), q.replace("self_attn.q_proj", "mlp.down_proj")
    assert "placements" not in ddp[q] and ddp[q]["local"] == [32, 32]
    params = [n for n in fsdp if not n.startswith("_")]
    assert all(fsdp[n]["placements"] == ["Shard(0)"] and fsdp[n]["mesh"] == ["data_parallel"] for n in params)
    assert fsdp[q]["local"] == [16, 32]
    assert tp[q]["mesh"] == ["data_parallel", "tensor_parallel"]  # FSDP2 over data parallel (size 1 here) too
    assert tp[q]["placements"][1] == "Shard(0)" and tp[q]["local"] == [16, 32]
    assert tp[o]["placements"][1] == "Shard(1)" and tp[o]["local"] == [32, 16]
    d_ff = ddp[down]["local"][1]
    assert tp[down]["placements"][1] == "Shard(1)" and tp[down]["local"] == [32, d_ff // 2]


def check_trainer_options(runs):
    """BERT, one process: 2 accumulated batches of B equal one batch of 2B; without clipping, or in
    bf16 autocast, the losses move away from the reference (the options reached the Trainer)."""
    ref = runs.loss["bert-single"]
    assert_close(runs.loss["bert-accumulate"], ref, 1e-5)
    assert max(abs(a - b) for a, b in zip(runs.loss["bert-noclip"], ref)) > 1e-2
    bf16 = runs.loss["bert-bf16"]  # fp32 reruns in one process are bit-identical; bf16 matmuls are not
    assert 1e-6 < max(abs(a - b) for a, b in zip(bf16, ref)) < 0.05, (bf16, ref)


def check_fsdp_accumulation(runs):
    """FSDP2 on 2 processes × 2 accumulated batches of B/2 (clipping on): one process on batches of 2B."""
    assert_close(runs.loss["bert-fsdp-accumulate"], runs.loss["bert-single"], 1e-4)


def check_compile_and_checkpointing(runs):
    """`compile: true` and `activation_checkpointing: true` from the command line: every block is wrapped,
    torch.compile (inductor) really compiled graphs, and the losses and weights stay those of eager."""
    layout = runs.layout["gpt-compile-ckpt"]
    assert layout["_blocks_compiled"] == [True, True] and layout["_blocks_checkpointed"] == [True, True]
    assert runs.layout["gpt-single"]["_blocks_compiled"] == [False, False]
    assert runs.compiled_graphs("gpt-compile-ckpt") > 0 and runs.compiled_graphs("gpt-single") == 0
    assert_close(runs.loss["gpt-compile-ckpt"], runs.loss["gpt-single"], 1e-4)
    want, got = runs.weights("gpt-single")["end"], runs.weights("gpt-compile-ckpt")["end"]
    assert max((got[n] - want[n]).abs().max() for n in want) <= 1e-4  # fused kernels round differently


@pytest.mark.parametrize(("n_head", "n_kv_head"), [(6, 6), (8, 2)])
def test_tensor_parallel_needs_heads_divisible_by_its_size(n_head, n_kv_head):
    """Query heads, and key/value heads under grouped-query attention, must split evenly: a one-line error."""
    from zoo.blocks import AttentionConfig, BlockConfig, MLPConfig
    from zoo.blocks.transformer import TransformerBlock
    from zoo.parallel import tensor_parallel_block

    block = TransformerBlock(BlockConfig(48, AttentionConfig(n_head, n_kv_head), MLPConfig(96)))
    message = f"tensor parallel size 4 does not divide .*n_head={n_head}, n_kv_head={n_kv_head}"
    with pytest.raises(ZooError, match=message):
        tensor_parallel_block(block, SimpleNamespace(size=lambda: 4))
    assert block.self_attn.n_head == n_head  # nothing changed
