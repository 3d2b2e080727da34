"""A tiny Llama that has learned to write one recipe, for the server's tests and benchmark.

Built offline in a few seconds: a chat tokenizer trained on a few recipe texts
(`tiny_causal.chat_tokenizer`), a 2-layer Llama, and a few hundred Adam steps on prompts built as
`chef-genius serve` and `generate` build them. Its greedy answer to any recipe request is
`RECIPE`, so tests can check that a whole recipe came through and was parsed; to `ENDLESS` it sings
"la la la..." and never ends (for tests of cancelled and timed-out requests).
"""

from __future__ import annotations

from pathlib import Path

from chef_genius.families import CAUSAL

RECIPE = ("Title: Tomato Pasta || Ingredients: 200 g pasta | 2 ripe tomatoes | 1 tbsp olive oil | 6 basil leaves || "
          "Steps: Boil the pasta in salted water until tender. | Chop the tomatoes and warm them in the olive oil. | "
          "Toss the pasta with the tomatoes and tear the basil over it.")
_WORDS = "Tomato Pasta Lemon Chicken Rice Soup Garlic Bread Salad Beef Curry Cake Bean Stew Apple Pie Fish".split()
# Requests in every form the server builds (title, title with foods, foods only, a tip) and a few
# that are no recipe request at all: the model answers each with RECIPE.
REQUESTS = ["Tomato Pasta with pasta, tomatoes", "Tomato Pasta", "a dish with pasta and tomatoes",
            "Pasta with tomatoes and basil", "Quick Pasta with pasta, olive oil", "Tomato Pasta. Tip: Use fresh basil.",
            "hello", "Write a recipe", *[f"{a} {b}" for a, b in zip(_WORDS, _WORDS[3:] + _WORDS[:3], strict=True)],
            *[f"{a} {b} with {b.lower()}, {c.lower()}" for a, b, c in zip(_WORDS, _WORDS[5:] + _WORDS[:5],
                                                                            _WORDS[7:] + _WORDS[:7], strict=True)]]


ENDLESS = "Sing forever"


def build_tiny_recipe_model(out: Path, steps: int = 120, seed: int = 0) -> Path:
    """Train and save the model and tokenizer into ``out``; returns ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from chef_genius.config_schema import SEED_TEMPLATES
    from tests.harness.tiny_causal import chat_tokenizer

    torch.manual_seed(seed)
    tokenizer = chat_tokenizer([RECIPE] * 4 + ["la " * 60, ENDLESS]
                               + [SEED_TEMPLATES[0].format(text=r) for r in REQUESTS])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    texts = [SEED_TEMPLATES[0].format(text=r) for r in REQUESTS] + REQUESTS[:8]
    prompts = CAUSAL.encode_sources(tokenizer, texts, 256)
    target = CAUSAL.encode_targets(tokenizer, [RECIPE], 256)[0]
    song = CAUSAL.encode_targets(tokenizer, ["la " * 60], 60)[0]  # cut at the limit: no end token
    endless = CAUSAL.encode_sources(tokenizer, [SEED_TEMPLATES[0].format(text=ENDLESS), ENDLESS], 256)
    pairs = [(p, target) for p in prompts] + [(p, song) for p in endless]
    width = max(len(p) + len(t) for p, t in pairs)
    ids = torch.full((len(pairs), width), tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (prompt, target) in enumerate(pairs):
        row = prompt + target
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        labels[i, len(prompt):len(row)] = torch.tensor(target)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def shared_tiny_recipe_model(tmp_path_factory) -> Path:
    """One model for the whole test session (the server, engine and page tests share it)."""
    folder = tmp_path_factory.getbasetemp() / "serve-model" / "tiny-recipes"
    if not (folder / "config.json").is_file():
        build_tiny_recipe_model(folder)
    return folder
