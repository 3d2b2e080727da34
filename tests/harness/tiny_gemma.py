"""A tiny random Gemma 3 written as a GGUF file the way llama.cpp writes Gemma 3 270M: architecture
`gemma3`, a sentencepiece vocabulary (`tokenizer.ggml.model` "llama", no merges, control tokens
<pad> <eos> <bos> <unk> ... <start_of_turn> <end_of_turn>, byte tokens), norms stored as 1 + weight,
no `output.weight` (tied embeddings), one key/value head of a wider head dimension, a sliding
window. Built in memory from a few recipe texts; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Gemma 3's ids: <pad> 0, <eos> 1, <bos> 2, <unk> 3; its turns are <start_of_turn>/<end_of_turn>.
CONTROL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]
# Gemma 3 instruction-tuned models' turns (its template, without the system-prompt handling).
GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
                  "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}<end_of_turn>\n"
                  "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def _pieces(texts: list[str], vocab_size: int) -> list[str]:
    """Sentencepiece-style pieces ('\u2581' for a space), in merge order (Gemma's files list them so)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]


def write_tiny_gemma_gguf(path: Path, texts: list[str], hidden: int = 32, layers: int = 2, head_dim: int = 16,
                          sliding_window: int = 8, chat_template: str | None = None) -> Path:
    """A ``layers``-layer Gemma 3 (4 query heads, 1 key/value head) as a GGUF file; with
    ``chat_template`` (e.g. `GEMMA_TEMPLATE`) like an instruction-tuned file, else like the base
    model (Gemma 3 270M's file has none)."""
    import gguf

    pieces = [p for p in _pieces(texts, 400) if p not in CONTROL and p not in BYTES]
    tokens = CONTROL + BYTES + pieces
    vocab, heads, ff = len(tokens), 4, 2 * hidden
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(1)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([-1000.0] * len(CONTROL) + [0.0] * len(BYTES) + [-float(i) for i in range(len(pieces))])
    writer.add_token_types([3] * len(CONTROL) + [6] * len(BYTES) + [1] * len(pieces))  # control, byte, normal
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    if chat_template:
        writer.add_chat_template(chat_template)
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int, norm: bool = False) -> None:
        values = rng.standard_normal(shape) * (0.1 if norm else 0.02)
        writer.add_tensor(name, (1.0 + values if norm else values).astype(np.float32))  # llama.cpp: norms + 1

    tensor("token_embd.weight", vocab, hidden)
    tensor("output_norm.weight", hidden, norm=True)
    for i in range(layers):
        for name, shape in [("attn_q", (heads * head_dim, hidden)), ("attn_k", (head_dim, hidden)),
                            ("attn_v", (head_dim, hidden)), ("attn_output", (hidden, heads * head_dim)),
                            ("ffn_gate", (ff, hidden)), ("ffn_up", (ff, hidden)), ("ffn_down", (hidden, ff))]:
            tensor(f"blk.{i}.{name}.weight", *shape)
        for name, size in [("attn_norm", hidden), ("attn_q_norm", head_dim), ("attn_k_norm", head_dim),
                           ("post_attention_norm", hidden), ("ffn_norm", hidden), ("post_ffw_norm", hidden)]:
            tensor(f"blk.{i}.{name}.weight", size, norm=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
