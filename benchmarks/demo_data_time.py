"""Time what issue 19 could have slowed in `make demo`: importing the CLI and preparing the embedded data.

    python benchmarks/demo_data_time.py ROOT    # ROOT: a checkout (e.g. `git archive f10ae98^` unpacked) or .
"""
import sys, time, tempfile, json
root = sys.argv[1]
sys.path.insert(0, root)
t0 = time.perf_counter()
import zoo.cli  # noqa
t1 = time.perf_counter()
from zoo.data import TextDataModule
with tempfile.TemporaryDirectory() as d:
    dm = TextDataModule(source="pydoc", tokenizer_kind="bpe", vocab_size=512, block_size=128, batch_size=16, cache_dir=d)
    dm.prepare_data(); dm.setup("fit")
    next(iter(dm.train_dataloader()))
t2 = time.perf_counter()
print(json.dumps({"root": root, "import_s": t1 - t0, "data_s": t2 - t1}))
