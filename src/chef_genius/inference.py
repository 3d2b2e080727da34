"""Load a trained run (base + adapter, or a merged / fully fine-tuned model) and generate recipes.

Used by validation samples, `generate`, `evaluate` and `merge`; one generation path for all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from chef_genius.errors import UserError

DECODING = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "beam": {"do_sample": False, "num_beams": 4},
    "sample": {"do_sample": True, "top_p": 0.95, "temperature": 0.8},
}


@dataclass
class LoadedRun:
    model: torch.nn.Module
    tokenizer: object
    causal: bool
    folder: Path
    is_adapter: bool


def model_folder(path: str | Path) -> Path:
    """The weights folder of a run (``RUN/final``), or the folder itself."""
    path = Path(path)
    if (path / "final").is_dir():
        return path / "final"
    if (path / "adapter_config.json").exists() or (path / "config.json").exists():
        return path
    raise UserError(f"{path}: not a run folder, adapter or model (no final/, adapter_config.json or config.json)")


def load_run(path: str | Path, device: str | None = None) -> LoadedRun:
    """Load base + LoRA adapter, or a full model, with its tokenizer, in eval mode.

    Raises:
        UserError: the folder holds no model, or its base model cannot be found.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder = model_folder(path)
    adapter = (folder / "adapter_config.json").exists()
    base_name = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] if adapter \
        else str(folder)
    try:
        config = AutoConfig.from_pretrained(base_name)
        causal = not config.is_encoder_decoder
        loader = AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM
        model = loader.from_pretrained(base_name)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load {folder} (base model '{base_name}'): {str(error).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return LoadedRun(model, tokenizer, causal, folder, adapter)


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer, prompts: list[str], causal: bool, decoding: str = "greedy",
             max_new_tokens: int = 256, num_return_sequences: int = 1, batch_size: int = 16, seed: int = 0,
             max_source_tokens: int = 512) -> list[list[str]]:
    """Recipes for each prompt (``num_return_sequences`` each), decoded to text.

    Prompts are encoded exactly as in training (`encode_sources`); causal prompts are left-padded
    and their tokens cut from the output. Sampling is seeded, and the caller's RNG states (CPU
    and CUDA) are restored afterwards, so generating during training never changes training.
    """
    from chef_genius.training.data import encode_sources

    device = next(model.parameters()).device
    settings = dict(DECODING[decoding])
    if num_return_sequences > 1 and not settings["do_sample"]:
        settings["num_beams"] = max(settings["num_beams"], num_return_sequences)
    pad_id = tokenizer.pad_token_id
    outputs: list[list[str]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            sources = encode_sources(tokenizer, prompts[start:start + batch_size], max_source_tokens, causal)
            input_ids, attention_mask = _pad(sources, pad_id, left=causal)
            limit = _position_limit(model)
            new_tokens = max_new_tokens if not (causal and limit) else max(1, min(max_new_tokens,
                                                                                  limit - input_ids.shape[1]))
            generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                       max_new_tokens=new_tokens, pad_token_id=pad_id,
                                       eos_token_id=tokenizer.eos_token_id,
                                       num_return_sequences=num_return_sequences, **settings)
            if causal:
                generated = generated[:, input_ids.shape[1]:]
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for i in range(len(sources)):
                outputs.append(texts[i * num_return_sequences:(i + 1) * num_return_sequences])
    return outputs


def _position_limit(model: torch.nn.Module) -> int | None:
    """Longest sequence a causal model's position embeddings allow (None when unbounded)."""
    config = getattr(model, "config", None)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if left:
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        else:
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
    return ids, mask
