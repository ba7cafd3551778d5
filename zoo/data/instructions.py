"""``InstructionDataModule``: instruction/chat records → chat template → packed, boundary-masked blocks.

Supervised fine-tuning data for decoders (as in InstructGPT, Ouyang et al., 2022, and the packed
SFT of litgpt/torchtune). Sources are JSONL files of ``{"prompt", "response"}`` records (the
feedback file `zoo serve` writes is one) or chat records ``{"messages": [{"role", "content"}, ...]}``,
and the embedded ``"pydoc"`` set: questions about each Python documentation topic answered by
the topic's paragraphs ("What does the Python documentation say about assert?" → its first
paragraph), built offline from ``pydoc_data``.

Each record is rendered by the chat template (`zoo.data.chat_template`) and tokenized piece by
piece, so every token is known to be prompt or response; labels are the next token where that
token is a response token and -100 elsewhere (the loss counts responses only). Examples are packed
into blocks of ``block_size`` tokens (first-fit, longest first) with per-token ``segment_ids`` and
``position_ids`` restarting at 0 in each example: the model attends only within an example
(`zoo.blocks.attend`), so a packed block computes what the examples would alone. The held-out
split is chosen by a seeded hash of each record's group (the topic, for the embedded set; the
prompt otherwise), so no topic is in both splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from zoo.data.chat_template import ChatTemplate, check_messages
from zoo.data.cleaning import normalize_text, split_paragraphs
from zoo.data.sampling import evaluation_loader, resumable_loader
from zoo.data.split import unit_hash
from zoo.data.tokenized import TokenizerMixin
from zoo.data.tokenizer import TokenizerKind, tokenizer_json_path
from zoo.errors import ZooError

PYDOC_QUESTIONS = (
    "What does the Python documentation say about {}?",
    "Tell me more about {} in Python.",
    "What else should I know about {}?",
    "Give one more detail about {} from the Python documentation.",
)


@dataclass
class Record:
    messages: list[dict]
    group: str  # records of one group land in the same split


def pydoc_instructions(max_response_chars: int = 400, per_topic: int = 4) -> list[Record]:
    """Questions about each pydoc topic answered by its first paragraphs (cut at a word boundary)."""
    from zoo.data.sources import pydoc_documents

    records = []
    for doc in pydoc_documents():
        name = doc.id.replace("-", " ")
        paragraphs = [p for p in split_paragraphs(normalize_text(doc.text)) if len(p) >= 40 and not _heading(p)]
        paragraphs = paragraphs[:per_topic]
        for question, paragraph in zip(PYDOC_QUESTIONS, paragraphs):
            answer = paragraph if len(paragraph) <= max_response_chars else \
                paragraph[:max_response_chars].rsplit(" ", 1)[0] + " ..."
            records.append(Record([{"role": "user", "content": question.format(name)},
                                   {"role": "assistant", "content": answer}], doc.id))
    return records


def _heading(paragraph: str) -> bool:
    """A reStructuredText title: some line is only underline characters."""
    return any(len(line) >= 3 and set(line.strip()) <= set("*=-~^") for line in paragraph.splitlines())


def jsonl_instructions(path: str) -> list[Record]:
    """Records of a JSONL file: {"prompt", "response"} (the serve feedback file) or {"messages": [...]}."""
    file = Path(path)
    if not file.is_file():
        raise ZooError(f"instruction source {path!r} is not a file; pass 'pydoc' or a .jsonl file to --data.sources")
    records = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ZooError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from None
        if isinstance(row, dict) and "messages" in row:
            messages = check_messages(row["messages"], where)
        elif isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
        else:
            raise ZooError(f'{where}: expected {{"prompt": str, "response": str}} or {{"messages": [...]}}')
        records.append(Record(messages, messages[0]["content"]))
    if not records:
        raise ZooError(f"instruction source {path!r} holds no records")
    return records


def encode_example(template: ChatTemplate, tokenizer: Tokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and, per token, whether it belongs to a response."""
    ids, is_response = [], []
    for text, response in template.response_spans(messages):
        piece = tokenizer.encode(text, add_special_tokens=False).ids
        ids += piece
        is_response += [response] * len(piece)
    return ids, is_response


def pack_examples(examples: list[tuple[list[int], list[bool]]], block_size: int, pad_id: int) -> list[dict]:
    """Blocks of ``block_size`` inputs: examples placed first-fit, longest first, never split.

    An example of n tokens takes n − 1 positions (inputs ids[:-1], labels ids[1:] where a response
    token, else -100). Segment ids count the examples of a block from 0; padding is one more
    segment, with labels -100 and positions 0.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i][0]), i))
    blocks: list[list[int]] = []
    room: list[int] = []
    for i in order:
        need = len(examples[i][0]) - 1
        slot = next((b for b, free in enumerate(room) if free >= need), None)
        if slot is None:
            blocks.append([])
            room.append(block_size)
            slot = len(blocks) - 1
        blocks[slot].append(i)
        room[slot] -= need
    return [_block([examples[i] for i in members], block_size, pad_id) for members in blocks]


def _block(members: list[tuple[list[int], list[bool]]], block_size: int, pad_id: int) -> dict:
    inputs = torch.full((block_size,), pad_id, dtype=torch.long)
    labels = torch.full((block_size,), -100, dtype=torch.long)
    positions = torch.zeros(block_size, dtype=torch.long)
    segments = torch.full((block_size,), len(members), dtype=torch.long)
    at = 0
    for s, (ids, response) in enumerate(members):
        n = len(ids) - 1
        ids_t = torch.tensor(ids)
        inputs[at:at + n] = ids_t[:-1]
        labels[at:at + n] = torch.where(torch.tensor(response[1:]), ids_t[1:], -100)
        positions[at:at + n] = torch.arange(n)
        segments[at:at + n] = s
        at += n
    return {"input_ids": inputs, "labels": labels, "position_ids": positions, "segment_ids": segments}


class PackedInstructions(Dataset):
    def __init__(self, blocks: list[dict]):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        return self.blocks[index]


class InstructionDataModule(TokenizerMixin, LightningDataModule):
    """Instruction tuning data: batches of packed examples
    ``{"input_ids", "labels", "position_ids", "segment_ids"}`` (each LongTensor[B, T]), labels -100 on
    prompt tokens and padding. The test split is the validation split.

    Args:
        sources: where records come from, any number of: "pydoc" (the embedded instruction set),
            or a .jsonl file of {"prompt", "response"} or {"messages": [{"role", "content"}, ...]}
            records (e.g. the feedback file of `zoo serve`).
        tokenizer: a tokenizer.json, a folder holding one (and maybe a tokenizer_config.json with a
            chat template), or the zoo .ckpt being fine-tuned. Default: the tokenizer the demo
            (configs/gpt/nano.yaml) trains, found in the cache by its settings.
        tokenizer_kind, vocab_size: settings of that default tokenizer (pydoc text).
        chat_template: Jinja template text, or a tokenizer_config.json (or folder) holding one.
            Default: the tokenizer folder's template if it has one, else the zoo's default, whose
            role markers are added to the tokenizer as special tokens.
        block_size: tokens per packed block (at most the model's context); longer examples are cut.
        batch_size: blocks per batch.
        val_fraction: share of record groups held out for validation (at least one group).
        max_response_chars: the embedded set's answers are cut to this many characters.
        seed: seed of the split and of the training shuffle.
        num_workers: DataLoader workers.
        cache_dir: where the default tokenizer is cached (default $ZOO_CACHE_DIR or ~/.cache/zoo).
    """

    tokenizer_name = "instruction tokenizer"

    def __init__(
        self,
        sources: list[str] = ["pydoc"],  # noqa: B006 (jsonargparse reads the default)
        tokenizer: Optional[str] = None,
        tokenizer_kind: TokenizerKind = "bpe",
        vocab_size: int = 512,
        chat_template: Optional[str] = None,
        block_size: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        max_response_chars: int = 400,
        seed: int = 1234,
        num_workers: int = 0,
        cache_dir: Optional[str] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not sources:
            raise ZooError("no instruction sources; set --data.sources to 'pydoc' and/or .jsonl files")
        if block_size < 2 or batch_size < 1:
            raise ZooError(f"block_size={block_size} must be >= 2 and batch_size={batch_size} >= 1")
        if not 0.0 < val_fraction < 1.0:
            raise ZooError(f"val_fraction={val_fraction} must lie strictly between 0 and 1; set --data.val_fraction")
        self.sources, self.tokenizer_file, self.chat_template_arg = list(sources), tokenizer, chat_template
        self.tokenizer_kind, self.vocab_size, self.cache_dir = tokenizer_kind, vocab_size, cache_dir
        self.block_size, self.batch_size, self.val_fraction = block_size, batch_size, val_fraction
        self.max_response_chars, self.seed, self.num_workers = max_response_chars, seed, num_workers
        self._template: Optional[ChatTemplate] = None
        self._splits: Optional[dict[str, list[Record]]] = None
        self._blocks: dict[str, list[dict]] = {}
        self.truncated = 0

    # ----------------------------------------------------------------- template and tokenizer
    @property
    def chat_template(self) -> ChatTemplate:
        if self._template is None:
            arg, found = self.chat_template_arg, None
            if arg is not None and ("{" in arg or not Path(arg).exists()):
                found = ChatTemplate(arg, special_tokens=())
            elif arg is not None:
                found = ChatTemplate.from_tokenizer_config(arg)
                if found is None:
                    raise ZooError(f"{arg} holds no chat_template; pass a tokenizer_config.json that has one")
            elif self.tokenizer_file is not None and Path(self.tokenizer_file).is_dir():
                found = ChatTemplate.from_tokenizer_config(self.tokenizer_file)
            self._template = found or ChatTemplate()
        return self._template

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            tok = super().tokenizer
            added = tok.add_special_tokens(list(self.chat_template.special_tokens))
            if added:
                rank_zero_info(f"{self.tokenizer_name}: added {added} chat-template special tokens "
                               f"({', '.join(self.chat_template.special_tokens)}): {tok.get_vocab_size()} tokens")
        return self._tokenizer

    def build_tokenizer(self):
        """The demo's tokenizer: the same settings find the same cached file."""
        from zoo.data.text import TextDataModule

        text = TextDataModule(source="pydoc", tokenizer_kind=self.tokenizer_kind, vocab_size=self.vocab_size,
                              cache_dir=self.cache_dir)
        return text.tokenizer, tokenizer_json_path(text.tokenizer_path) if text.tokenizer_path else None

    # ----------------------------------------------------------------- records and blocks
    def records(self, split: str = "train") -> list[Record]:
        """The records of "train" or "val" ("test" is "val")."""
        if self._splits is None:
            pool = []
            for source in self.sources:
                pool += pydoc_instructions(self.max_response_chars) if source == "pydoc" else jsonl_instructions(source)
            groups = sorted({r.group for r in pool})
            held = {g for g in groups if unit_hash(self.seed, g) < self.val_fraction}
            held = held or {min(groups, key=lambda g: unit_hash(self.seed, g))}
            if len(held) == len(groups) and len(groups) > 1:
                held.discard(max(groups, key=lambda g: unit_hash(self.seed, g)))
            self._splits = {"train": [r for r in pool if r.group not in held], "val": [r for r in pool if r.group in held]}
            rank_zero_info(f"instructions {self.sources}: {len(self._splits['train'])} train / "
                           f"{len(self._splits['val'])} held-out records ({len(held)} of {len(groups)} groups)")
        return self._splits["val" if split == "test" else split]

    def examples(self, split: str) -> list[tuple[list[int], list[bool]]]:
        """(ids, is_response) per record, cut to block_size + 1 tokens; records left with no response dropped."""
        out = []
        for record in self.records(split):
            ids, response = encode_example(self.chat_template, self.tokenizer, record.messages)
            if len(ids) > self.block_size + 1:
                self.truncated += 1
                ids, response = ids[: self.block_size + 1], response[: self.block_size + 1]
            if any(response[1:]):
                out.append((ids, response))
        if not out:
            raise ZooError(f"no {split} example has a response token within block_size={self.block_size}; "
                           "raise --data.block_size or shorten the prompts")
        return out

    def blocks(self, split: str) -> list[dict]:
        split = "val" if split == "test" else split
        if split not in self._blocks:
            self._blocks[split] = pack_examples(self.examples(split), self.block_size, self.pad_token_id)
        return self._blocks[split]

    def setup(self, stage: Optional[str] = None) -> None:
        for split in ("train", "val"):
            self.blocks(split)

    # ----------------------------------------------------------------- loaders
    def train_dataloader(self) -> DataLoader:
        return resumable_loader(PackedInstructions(self.blocks("train")), self.batch_size, self.seed, self.trainer,
                                num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return evaluation_loader(PackedInstructions(self.blocks("val")), self.batch_size, self.seed,
                                 num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
