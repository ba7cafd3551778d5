"""``zoo data``: the data pipeline's commands.

    zoo data prepare -c configs/data/pydoc.yaml [--tasks 4 --workers 2 ...]
    zoo data report --output runs/data/pydoc

``prepare`` runs ``zoo.data.pipeline`` (datatrove) and writes the sharded token files, the
tokenizer, the cleaned documents and the data report into ``output``; a training config then points
``data.shards`` at that folder. Rerunning the same command after a crash or a kill resumes: the
tasks that finished are not redone. Needs ``pip install zoo[data]``.
"""

from __future__ import annotations

from typing import Optional

from zoo.data.pipeline.config import (
    C4Config, CleanConfig, GopherQualityConfig, GopherRepetitionConfig, InputSpec, LanguageConfig, MinhashSettings,
    PIIConfig, TokenizeConfig,
)


class DataCommands:
    """Prepare corpora for training: filter, deduplicate, scrub and tokenize them into shards."""

    def prepare(
        self,
        output: str,
        inputs: list[InputSpec] = [InputSpec()],  # noqa: B006 (never mutated; jsonargparse shows it)
        tasks: int = 2,
        workers: int = 2,
        clean: CleanConfig = CleanConfig(),
        language: Optional[LanguageConfig] = None,
        gopher_repetition: Optional[GopherRepetitionConfig] = GopherRepetitionConfig(),
        gopher_quality: Optional[GopherQualityConfig] = GopherQualityConfig(),
        c4: Optional[C4Config] = None,
        pii: Optional[PIIConfig] = PIIConfig(),
        minhash: Optional[MinhashSettings] = MinhashSettings(),
        tokenize: TokenizeConfig = TokenizeConfig(),
        keep_documents: bool = True,
        report: bool = True,
    ) -> str:
        """Run the pipeline: read → clean → quality filters → PII → MinHash dedup → tokenize → shards.

        Args:
            output: folder for the shards (train/*.bin, val/*.bin, shards.json), tokenizer.json,
                documents/, report.md and the work and log folders.
            inputs: corpora to read, one after another (see InputSpec: pydoc, text files,
                folders, globs, JSONL, Parquet, compressed too, hf:NAME).
            tasks: shards of the work (and of the output); a rerun skips finished tasks.
            workers: processes running tasks at once on this machine.
            clean: the zoo's normalization and minimum length.
            language: fastText language identification (null: off; skipped when offline).
            gopher_repetition: Gopher repetition rules (null: off).
            gopher_quality: Gopher quality rules (null: off).
            c4: C4 line and page rules (null: off).
            pii: PII scrubbing (null: off).
            minhash: MinHash near-duplicate removal (null: off).
            tokenize: tokenizer and train/validation split of the shards.
            keep_documents: also write the final documents as JSONL (documents/).
            report: write report.md and plots, and print the summary.
        """
        from zoo.data.pipeline.run import PipelineConfig, quiet_console, run_pipeline

        cfg = PipelineConfig(output, list(inputs), tasks, workers, clean, language, gopher_repetition, gopher_quality,
                             c4, pii, minhash, tokenize, keep_documents)
        quiet_console()
        out = run_pipeline(cfg)
        if report:
            self.report(str(out))
        else:
            print(f"data: shards in {out}")
        return str(out)

    def report(self, output: str) -> None:
        """Write the data report of a prepared folder (report.md, report/*.png) and print its summary.

        Args:
            output: a folder written by `zoo data prepare`.
        """
        from zoo.data.pipeline.report import write_report

        print(write_report(output))


__all__ = ["DataCommands"]
