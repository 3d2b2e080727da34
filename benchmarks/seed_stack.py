"""The seed's training stack, as its document sets it up, for the benchmarks to compare against:
Hugging Face Seq2SeqTrainer + PEFT LoRA r16 / alpha 32 / dropout 0.1 on q and v, bf16, prompts
padded to 256 tokens and targets to 512. Used by throughput.py and learning_curve.py.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_PAD, TARGET_PAD = 256, 512


def seed_rows(model: str, data: str, order: list[int] | None = None) -> list[dict[str, list[int]]]:
    """Training rows of the prepared ``data`` (in ``order``, else all), tokenized and padded as the
    seed does, with decoder_input_ids as DataCollatorForSeq2Seq makes them (the Trainer pops the
    labels when it smooths them)."""
    from transformers import AutoTokenizer

    from chef_genius.augment import canonical_prompt
    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.dataset.collate import load_split
    from chef_genius.recipe import serialize

    tokenizer = AutoTokenizer.from_pretrained(model)
    table = load_split(Path(data), "train")
    order = list(range(len(table))) if order is None else order
    prompts = [canonical_prompt(SEED_TEMPLATES, table.titles[i], table.ner[i]) for i in order]
    targets = [serialize(table.recipe(i)) for i in order]
    inputs = tokenizer(prompts, max_length=SOURCE_PAD, padding="max_length", truncation=True)
    labels = tokenizer(targets, max_length=TARGET_PAD, padding="max_length", truncation=True)["input_ids"]
    pad = tokenizer.pad_token_id
    return [{"input_ids": i, "attention_mask": m, "labels": [t if t != pad else -100 for t in lab],
             "decoder_input_ids": [pad, *lab[:-1]]}
            for i, m, lab in zip(inputs["input_ids"], inputs["attention_mask"], labels, strict=True)]


def rows_dataset(rows: list[dict[str, list[int]]]):
    """A map-style dataset of the rows as tensors."""
    import torch

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return {k: torch.tensor(v) for k, v in rows[i].items()}

    return Rows()


def seed_lora_model(model: str):
    """The base model in bf16 with the seed's LoRA adapter."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    base = AutoModelForSeq2SeqLM.from_pretrained(model, dtype=torch.bfloat16)
    return get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=16, lora_alpha=32, lora_dropout=0.1,
                                           target_modules=["q", "v"]))
