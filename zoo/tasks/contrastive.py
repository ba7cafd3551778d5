"""Contrastive image-text training: CLIP's symmetric InfoNCE (Radford et al., 2021; van den Oord et
al., 2018, "Representation Learning with Contrastive Predictive Coding").

For a batch of N pairs the logits are s·I·Tᵀ (N × N, cosine similarities times the learned scale
s = exp(logit_scale)); the loss is the mean of cross-entropy over rows (image → its caption) and
over columns (caption → its image), with the diagonal as targets.

Under DDP every rank gathers the embeddings of all ranks *with their gradient* (an all_gather
whose backward sums, over ranks, the gradients flowing into each rank's slot) and scores its own b rows against all W·b columns. Each rank's loss is then the mean
over its rows, the global loss is the mean of the rank losses, and the gradient reaching rank r's
embeddings is Σ_r' ∂loss_r'/∂f_r; DDP's averaging divides by W, which gives exactly ∂(global
loss)/∂θ — the same loss and gradients as one process on the whole batch, no rescaling needed.

Validation logs image→text and text→image recall@k over the whole validation split (a caption
counts as a match when its text equals the paired caption's) and zero-shot accuracy: class names
× prompt templates → averaged normalised text embeddings → argmax over classes (Radford et al.,
2021, §3.1.4).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from zoo.errors import ZooError
from zoo.models.base import ImageTextModel
from zoo.evaluation.metrics import recall_at_k, zero_shot_accuracy  # noqa: F401  (also imported from here)
from zoo.tasks.base import Schedule, Task


# ----------------------------------------------------------------------------- loss
class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the summed gradient of its own slot: every rank's
    loss depends on every rank's embeddings. (all_reduce, not reduce_scatter: gloo has only the former.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # (W·b, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(all ranks' rows concatenated (W·b, D), this rank's index); x itself outside DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return _GatherWithGrad.apply(x), dist.get_rank()


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of this rank's b pairs against the global batch.

    image_embeds, text_embeds: (b, D), L2-normalised, row i of each is a pair. logit_scale: the
    applied multiplier exp(logit_scale). Every rank must hold the same b.
    """
    all_images, rank = gather_with_grad(image_embeds)
    all_texts, _ = gather_with_grad(text_embeds)
    b = image_embeds.shape[0]
    targets = torch.arange(b, device=image_embeds.device) + rank * b
    logits_per_image = logit_scale * image_embeds @ all_texts.t()  # (b, W·b)
    logits_per_text = logit_scale * text_embeds @ all_images.t()  # (b, W·b)
    return (F.cross_entropy(logits_per_image.float(), targets) + F.cross_entropy(logits_per_text.float(), targets)) / 2


# ----------------------------------------------------------------------------- metrics
_KEY_WEIGHTS = torch.randint(1, 2**31, (4096,), generator=torch.Generator().manual_seed(0))


def caption_keys(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B,) int64 keys equal for equal captions, whatever their padding (a random linear hash)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    weights = _KEY_WEIGHTS[: input_ids.shape[1]].to(input_ids.device)
    return ((input_ids + 1) * mask * weights).sum(dim=-1)


@torch.no_grad()
def zero_shot_classifier(
    encode_text: Callable[..., torch.Tensor],
    tokenize: Callable[[list[str]], dict],
    class_names: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(C, D) class embeddings: each class's prompts encoded, normalised, averaged, renormalised."""
    prompts = [template.format(name) for name in class_names for template in templates]
    batch = {k: v.to(device) for k, v in tokenize(prompts).items()}
    embeds = F.normalize(encode_text(batch["input_ids"], batch["attention_mask"]).float(), dim=-1)
    return F.normalize(embeds.view(len(class_names), len(templates), -1).mean(dim=1), dim=-1)


def check_data_matches_model(model: nn.Module, datamodule) -> None:
    """A ZooError when the captions the data module makes cannot be read by the text tower."""
    if datamodule is None or not isinstance(model, ImageTextModel):
        return
    text = model.config.text
    eos = getattr(datamodule, "eos_token_id", None)
    if text.pooling == "eos" and eos is not None and eos != text.eos_token_id:
        raise ZooError(f"the model reads captions at text.eos_token_id={text.eos_token_id} but the tokenizer ends them "
                       f"with id {eos}; set model.init_args.model.init_args.config.text.eos_token_id: {eos}")
    max_length = getattr(datamodule, "max_length", None)
    if max_length is not None and max_length > text.max_seq_len:
        raise ZooError(f"captions of up to {max_length} tokens do not fit text.max_seq_len={text.max_seq_len}; "
                       "lower --data.max_length or raise the model's text.max_seq_len")


# ----------------------------------------------------------------------------- task
class Contrastive(Task):
    """Train an image-text model (e.g. `zoo.models.CLIP`) with symmetric InfoNCE.

    Logs `train/loss`, `train/logit_scale` (the applied multiplier exp(logit_scale)), `lr`,
    `val/loss`, `val/i2t_R@k` and `val/t2i_R@k` for each k in `recall_k`, and
    `val/zero_shot_acc` when the data module names classes (`class_names`, `templates`).

    Args:
        model: a zoo image-text model: `encode_image`, `encode_text`, a `logit_scale` parameter,
            and `forward(pixel_values, input_ids, attention_mask)` returning normalised
            `image_embeds`, `text_embeds` and the applied `logit_scale`.
        optimizer: optimizer factory (default AdamW).
        schedule: "cosine", "linear" or "constant" after warm-up.
        warmup_steps: optimizer steps of linear warm-up.
        min_lr_ratio: final learning rate as a fraction of the peak.
        max_logit_scale: after each optimizer step logit_scale is clamped to [0, ln(max_logit_scale)]
            (CLIP clamps at 100 to keep training stable).
        recall_k: the k of the logged retrieval recalls.
        cpu_threads: torch intra-op threads while this task runs on a CPU accelerator (None keeps
            torch's default). Small models on a CPU shared with other jobs run far faster on 1
            thread: two threads that wait on each other stall whenever one is descheduled.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: Schedule = "cosine",
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        max_logit_scale: float = 100.0,
        recall_k: list[int] = [1, 5],  # noqa: B006  (jsonargparse shows the default)
        cpu_threads: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(model, optimizer, schedule, warmup_steps, min_lr_ratio, **kwargs)
        if max_logit_scale < 1.0:
            raise ZooError(f"max_logit_scale={max_logit_scale} must be at least 1; set --model.init_args.max_logit_scale")
        if cpu_threads is not None and cpu_threads < 1:
            raise ZooError(f"cpu_threads={cpu_threads} must be at least 1 (or null); set --model.init_args.cpu_threads")
        self.max_logit_scale, self.recall_k, self.cpu_threads = max_logit_scale, list(recall_k), cpu_threads
        self._saved_threads: Optional[int] = None
        self._eval: list[tuple[torch.Tensor, ...]] = []
        self.last_metrics: dict[str, float] = {}

    def contrastive_step(self, batch: dict) -> tuple[torch.Tensor, object]:
        """(loss, model output) for a batch of pairs; the training and evaluation objective."""
        out = self.model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                         attention_mask=batch.get("attention_mask"))
        return contrastive_loss(out.image_embeds, out.text_embeds, out.logit_scale), out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, out = self.contrastive_step(batch)
        B = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/logit_scale", out.logit_scale.detach(), batch_size=B)
        self._log_lr()
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.clamp_logit_scale()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        scale = getattr(self.model, "logit_scale", None)
        if isinstance(scale, torch.Tensor):
            scale.clamp_(0.0, math.log(self.max_logit_scale))

    def setup(self, stage: str) -> None:
        from lightning.pytorch.accelerators import CPUAccelerator

        if self.cpu_threads and isinstance(self.trainer.accelerator, CPUAccelerator):
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self.cpu_threads)

    def teardown(self, stage: str) -> None:
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._check_data_matches_model()

    def _check_data_matches_model(self) -> None:
        check_data_matches_model(self.model, getattr(self.trainer, "datamodule", None))

    # ------------------------------------------------------------- evaluation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._eval = []

    def on_test_epoch_start(self) -> None:
        self._eval = []

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._eval_epoch_end("val")
        self._eval = []

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
        self._eval = []

    def _eval_step(self, batch: dict, stage: str) -> None:
        loss, out = self.contrastive_step(batch)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)
        keys = caption_keys(batch["input_ids"], batch.get("attention_mask"))
        labels = batch.get("labels", torch.full_like(keys, -1))
        self._eval.append((out.image_embeds.float(), out.text_embeds.float(), keys, labels))

    def _gathered(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size == 1:
            return tensor
        return self.all_gather(tensor).flatten(0, 1)  # (W, N, ...) -> (W·N, ...)

    def _eval_epoch_end(self, stage: str) -> None:
        if not self._eval:
            return
        images, texts, keys, labels = (self._gathered(torch.cat(parts)) for parts in zip(*self._eval))
        similarity = images @ texts.t()  # (N images, N texts)
        positives = keys[:, None] == keys[None, :]  # texts equal to the paired caption count as matches
        metrics = {}
        for k in self.recall_k:
            metrics[f"{stage}/i2t_R@{k}"] = recall_at_k(similarity, positives, k)
            metrics[f"{stage}/t2i_R@{k}"] = recall_at_k(similarity.t(), positives.t(), k)
        accuracy = self._zero_shot(images, labels)
        if accuracy is not None:
            metrics[f"{stage}/zero_shot_acc"] = accuracy
        for name, value in metrics.items():
            self.log(name, value, prog_bar=name.endswith("zero_shot_acc"), sync_dist=True)
        self.last_metrics = {name: float(value) for name, value in metrics.items()}

    def _zero_shot(self, image_embeds: torch.Tensor, labels: torch.Tensor) -> Optional[torch.Tensor]:
        dm = getattr(self.trainer, "datamodule", None)
        names, templates = getattr(dm, "class_names", None), getattr(dm, "templates", None)
        known = labels >= 0
        if not names or not templates or not hasattr(dm, "tokenize") or not bool(known.any()):
            return None
        was_training = self.model.training
        self.model.eval()
        classes = zero_shot_classifier(self.model.encode_text, dm.tokenize, names, templates, self.device)
        self.model.train(was_training)
        return zero_shot_accuracy(image_embeds[known], classes, labels[known])
