"""Write a random-weight model folder with a published architecture, for GPU runs offline.

Throughput and memory do not depend on weight values, and the device machine cannot reach the
model hub, so benchmarks and smoke runs use the real FLAN-T5 shapes with random weights and a
tokenizer trained on the recipes.

    python benchmarks/make_model.py --arch flan-t5-base --corpus recipes.csv --out /tmp/flan-t5-base
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

# From the published google/flan-t5-* config.json files.
ARCHITECTURES = {
    "flan-t5-small": {"d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 8, "num_decoder_layers": 8,
                      "num_heads": 6},
    "flan-t5-base": {"d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12, "num_decoder_layers": 12,
                     "num_heads": 12},
    "flan-t5-large": {"d_model": 1024, "d_kv": 64, "d_ff": 2816, "num_layers": 24, "num_decoder_layers": 24,
                      "num_heads": 16},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), required=True)
    parser.add_argument("--corpus", type=Path, nargs="+", required=True, help="recipe files for the tokenizer")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from chef_genius.recipe import serialize
    from chef_genius.sources import Rejected, open_source, read_rows
    from chef_genius.tokenizer import train_t5_style_tokenizer

    texts = [serialize(item) for path in args.corpus for _, item in read_rows(open_source(path, progress=False))
             if not isinstance(item, Rejected)]
    raw = train_t5_style_tokenizer(texts, vocab_size=32000, algorithm="bpe")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.1,
                      **ARCHITECTURES[args.arch])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"{args.arch}: {sum(p.numel() for p in model.parameters()):,} parameters, tokenizer "
          f"{len(tokenizer):,} tokens -> {args.out}")


if __name__ == "__main__":
    main()
