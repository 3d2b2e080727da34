"""Builds tests/data/resume_v1/: runs checkpointed by chef-genius as it was before the
training/ folder was reorganised (issue 24), for `tests/test_resume_fixture.py`.

For each model family (``seq2seq``: the `tiny` T5; ``causal``: a two-layer GPT-2 with a byte-level
tokenizer), a short run with every improvement on is trained to its end with a checkpoint every
3 steps; the fixture keeps the run's settings, one mid-run checkpoint and what the run logged
after it (``expected.jsonl``), so a resume under later code can be compared with it. Paths in the
settings are relative (the test runs from a copy of the folder). Run from the repository root:
``python tests/data/make_resume_fixture.py`` (a minute on CPU). Not rerun by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "resume_v1"
KEEP_STEP = 6  # the checkpoint kept: the run goes on past it


def train_args(run: str, *extra: str) -> list[str]:
    return ["train", "--data", "data", "--output-dir", run, "--report-to", "jsonl", "--epochs", "2",
            "--batch-size", "4", "--gradient-accumulation-steps", "2", "--eval-steps", "3",
            "--label-smoothing", "0.1", "--augmentation-prob", "0.3",
            "--set", "data.curriculum=true", "--set", "gradient_noise.enabled=true",
            "--set", "data.num_workers=0", "--set", "model.max_target_tokens=48",
            "--set", "model.max_source_tokens=24", "--set", "checkpoint.save_steps=3",
            "--set", "checkpoint.keep_last=10", "--set", "eval.generate_samples=false",
            "--set", "logging.log_every=1", "--seed", "11", *extra]


def tiny_gpt2(folder: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from chef_genius.sample import sample_path
    from tests.harness.byte_level import train_byte_level_tokenizer

    texts = [r["title"] + " " + " ".join(r["steps"]) for r in json.loads(sample_path().read_text())[:100]]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_tokenizer(texts, 400),
                                        eos_token="<|endoftext|>", pad_token="<pad>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from chef_genius.cli import main as cli
    from chef_genius.prepare import PrepareOptions, prepare
    from chef_genius.sample import sample_path

    torch.set_num_threads(1)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        recipes = json.loads(sample_path().read_text(encoding="utf-8"))[:40]
        (work / "recipes.json").write_text(json.dumps(recipes))
        prepare([work / "recipes.json"], work / "data", PrepareOptions(val_fraction=0.2, test_fraction=0.0,
                                                                         progress=False, workers=0))
        tiny_gpt2(work / "gpt2")
        os.chdir(work)
        for family, extra in (("seq2seq", ()), ("causal", ("--model", "gpt2"))):
            assert cli(train_args(family, *extra)) == 0, family
            run = work / family
            kept = OUT / family
            kept.mkdir()
            for name in ("config.yaml", "fingerprint.json"):
                shutil.copy(run / name, kept / name)
            if (run / "base_model").is_dir():
                shutil.copytree(run / "base_model", kept / "base_model")
            step = f"step-{KEEP_STEP:08d}"
            shutil.copytree(run / "checkpoints" / step, kept / "checkpoints" / step)
            logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            after = [m for m in logged if m["step"] > KEEP_STEP]
            (kept / "expected.jsonl").write_text("".join(json.dumps(m) + "\n" for m in after))
        shutil.copytree(work / "data", OUT / "data")
        shutil.copytree(work / "gpt2", OUT / "gpt2")


if __name__ == "__main__":
    main()
