import pytest

from tests.cli.conftest import tiny_fit_args
from zoo.cli import main


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """A nano GPT trained for 2 steps through `zoo fit`; its last.ckpt."""
    root = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    args = tiny_fit_args(root, str(cache))
    args[args.index("--trainer.max_steps") + 1] = "2"
    assert main(args) == 0
    return sorted(root.rglob("last.ckpt"))[0]
