"""The command line's parser: each command, its flags and help, and its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from chef_genius import __version__
from chef_genius.cli.commands import (
    _evaluate,
    _export,
    _generate,
    _merge,
    _preference_pairs,
    _prepare,
    _report,
    _score,
    _serve,
)
from chef_genius.cli.training import _train


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chef-genius", description="Fine-tune language models to write recipes.")
    parser.add_argument("--version", action="version", version=f"chef-genius {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="clean, score, deduplicate and split recipe files")
    prepare.add_argument("sources", nargs="*", type=Path, metavar="SRC", help="recipe files (CSV, JSON, JSONL)")
    prepare.add_argument("--sample", action="store_true", help="use the bundled Wikibooks sample as a source")
    prepare.add_argument("--out", type=Path, required=True,
                         help="output folder for the prepared dataset (new, empty, or an earlier dataset)")
    prepare.add_argument("--overwrite", action="store_true",
                         help="write into a non-empty folder that holds no dataset (its other files are kept)")
    prepare.add_argument("--format", default="auto", dest="fmt",
                         choices=("auto", "recipenlg", "foodcom", "csv", "json", "jsonl"))
    prepare.add_argument("--columns", help="CSV column map, e.g. title=Title,ingredients=Ingredients,steps=Steps")
    prepare.add_argument("--encoding", help="text encoding of every source, e.g. cp1252 or utf-16 (default: detected "
                                            "per file: UTF-8 with or without BOM, UTF-16 with BOM, else cp1252)")
    prepare.add_argument("--val-fraction", type=float, default=0.10)
    prepare.add_argument("--test-fraction", type=float, default=0.05)
    prepare.add_argument("--workers", type=int, default=None, help="processes (default: all cores; 0: none)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    prepare.set_defaults(handler=_prepare)

    score = commands.add_parser("score", help="recipe metrics of a recipe as text, Markdown or JSON")
    score.add_argument("file", type=Path, help="recipe file ('-' reads standard input)")
    score.add_argument("--json", action="store_true", help="print JSON")
    score.set_defaults(handler=_score)

    train = commands.add_parser("train", help="fine-tune a model (no arguments: the offline demo)")
    train.add_argument("--config", type=Path, help="YAML config file")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved config, each key with its help, as YAML (usable as --config) and exit")
    train.add_argument("--plan", action="store_true",
                       help="print the plan by epoch, or by segment when curriculum stages advance by step "
                            "(difficulty, threshold, examples, steps) and exit")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set any config key, e.g. --set eval.patience=5 (YAML value syntax; --print-config "
                            "lists every key with its help)")
    from chef_genius.config import FLAGS
    from chef_genius.config_help import field_help
    from chef_genius.config_schema import DECODING_NAMES, EvalConfig

    for flag, (key, kind) in FLAGS.items():
        described = field_help(key).replace("%", "%%")  # argparse formats help with %
        if isinstance(kind, bool):
            # A --disable-* flag turns the field's feature off: its help says so before the field's own.
            described = described if kind else f"Turns this off. {key}: {described}"
            train.add_argument(flag, dest=key, action="store_const", const=kind, default=None,
                               help=f"{described} (sets {key} to {str(kind).lower()})")
        else:
            train.add_argument(flag, dest=key, type=kind, default=None, metavar=key.rpartition(".")[2].upper(),
                               help=f"{described} (sets {key})")
    train.set_defaults(handler=_train)

    gen = commands.add_parser("generate", help="write recipes with a trained run, adapter or model")
    gen.add_argument("run", type=Path, help="run folder, adapter folder, model folder or GGUF file")
    gen.add_argument("prompt", nargs="?", help='what to cook, e.g. "pasta with tomatoes and basil"')
    gen.add_argument("--file", type=Path, help="prompts, one per line")
    gen.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    gen.add_argument("--decoding", choices=DECODING_NAMES, default=EvalConfig.decoding,
                         help="decoding preset (default: %(default)s)")
    gen.add_argument("--max-new-tokens", type=int, default=EvalConfig.max_new_tokens)
    gen.add_argument("--seed", type=int, default=0)
    _quality_flags(gen)
    gen.set_defaults(handler=_generate)

    evaluate = commands.add_parser("evaluate", help="measure a run or adapter on a prepared dataset")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    evaluate.add_argument("--split", choices=("test", "val", "train"), default="test")
    evaluate.add_argument("--max-examples", type=int, default=50)
    evaluate.add_argument("--samples", type=int, default=3, help="samples per input (Chef Transformer protocol)")
    evaluate.add_argument("--decoding", choices=DECODING_NAMES, default=EvalConfig.decoding,
                         help="decoding preset (default: %(default)s)")
    evaluate.add_argument("--max-new-tokens", type=int, default=EvalConfig.max_new_tokens)
    evaluate.add_argument("--out", type=Path, help="JSON output (default: RUN/evaluation-SPLIT.json)")
    evaluate.add_argument("--judge-model", type=Path,
                          help="the untuned SmolLM2-135M-Instruct (its GGUF or folder): the LM judge reads each sample "
                               "too, adding cookable_lm_rate (docs/quality.md)")
    _quality_flags(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    merge = commands.add_parser("merge", help="write a standalone model with the LoRA adapter merged in")
    merge.add_argument("run", type=Path)
    merge.add_argument("--out", type=Path, required=True,
                       help="output folder for the merged model (new, empty, or an earlier merge)")
    merge.add_argument("--overwrite", action="store_true",
                       help="write into a non-empty folder that holds no merged model (its other files are kept)")
    merge.set_defaults(handler=_merge)

    serve = commands.add_parser("serve", help="serve a run over HTTP: OpenAI-compatible API, recipes and a web page")
    serve.add_argument("run", type=Path, help="run folder, adapter folder, model folder or GGUF file")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: %(default)s; any other needs an API key)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    serve.add_argument("--api-key", help="key clients must send (Authorization: Bearer KEY); default: the "
                                         "CHEF_GENIUS_API_KEY environment variable")
    serve.add_argument("--decoding", choices=DECODING_NAMES, default=EvalConfig.decoding,
                       help="decoding of requests that name none (default: %(default)s)")
    serve.add_argument("--max-tokens", type=int, default=EvalConfig.max_new_tokens,
                       help="tokens written when a request does not say (default: %(default)s)")
    serve.add_argument("--max-tokens-cap", type=int, default=1024, help="most max_tokens a request may ask")
    serve.add_argument("--max-batch", type=int, default=64, help="rows decoded together (default: %(default)s)")
    serve.add_argument("--max-queue", type=int, default=256,
                       help="requests queued or running; more are answered 503 (default: %(default)s)")
    serve.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take (default: 120)")
    serve.add_argument("--stream-every", type=int, default=4,
                       help="decode steps between the text sent to clients: more is fewer, larger pieces (less work "
                            "for the server, a later first token) (default: %(default)s)")
    serve.add_argument("--fused-step", action="store_true", default=True,
                       help="decode a plain Llama's steps through chef-genius' fused step (q/k/v and gate/up each one "
                            "product; a second copy of the weights; about 1.2x the tokens/s on an H100) (default: on)")
    serve.add_argument("--no-fused-step", dest="fused_step", action="store_false",
                       help="decode a plain Llama's steps through the model's own layers")
    serve.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                       help="the weights' type while serving (bfloat16: half the memory, other last bits) "
                            "(default: %(default)s)")
    serve.add_argument("--compile-step", action="store_true",
                       help="--fused-step (implied) with each layer compiled by torch.compile "
                            "(fused element-wise kernels; 1.8x the tokens/s of the plain step on an H100, "
                            "but a compilation of up to a minute for each cache size the server meets) (default: off)")
    serve.add_argument("--trace", type=Path, help="append one JSON line per request to this file as it ends: "
                                              "seconds queued, to its first text, and in all (where the time goes)")
    serve.add_argument("--device", help="cuda or cpu (default: cuda when there is one)")
    serve.add_argument("--engine", choices=("chef-genius", "transformers"), default="chef-genius",
                       help="who decodes: chef-genius' generation engine (fixed slots, one KV cache, a CUDA-graph "
                            "step; causal models it supports, others fall back) or transformers' forward pass "
                            "token by token (default: %(default)s)")
    serve.set_defaults(handler=_serve)

    export = commands.add_parser("export", help="write a run as a GGUF file with an Ollama Modelfile, or as a "
                                                "merged Transformers folder")
    export.add_argument("run", type=Path, help="run folder, checkpoint, adapter or model folder")
    export.add_argument("--format", choices=("gguf", "merged"), default="gguf", dest="fmt",
                        help="gguf: one file for llama.cpp and Ollama, a Modelfile beside it (Llama-architecture "
                             "models); merged: a Transformers folder, as merge writes (default: %(default)s)")
    export.add_argument("--outtype", choices=("f16", "q8_0"), default=None,
                        help="GGUF tensor type of the 2-D weights (default: f16; norms stay f32)")
    export.add_argument("--out", type=Path, required=True, help="FILE.gguf, or the folder of --format merged")
    export.add_argument("--overwrite", action="store_true",
                        help="replace files that chef-genius exported earlier (a GGUF file and its Modelfile; "
                             "merged: as merge's --overwrite)")
    export.set_defaults(handler=_export)

    pairs = commands.add_parser("preference-pairs", help="preference pairs for DPO (train --preference): the real "
                                                         "recipe of training prompts over the run's own samples "
                                                         "that the cookable verdict rejects")
    pairs.add_argument("run", type=Path, help="run folder, checkpoint, adapter or model folder")
    pairs.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    pairs.add_argument("--split", choices=("train", "val", "test"), default="train")
    pairs.add_argument("--max-examples", type=int, default=500, help="prompts (a fixed random subset of the split; "
                                                                     "default: %(default)s)")
    pairs.add_argument("--samples", type=int, default=1, metavar="N",
                       help="recipes sampled per prompt; each one rejected makes a pair (default: %(default)s)")
    pairs.add_argument("--keep-all", action="store_true", help="make pairs of cookable samples too")
    pairs.add_argument("--decoding", choices=DECODING_NAMES, default=EvalConfig.decoding,
                       help="decoding preset (default: %(default)s)")
    pairs.add_argument("--max-new-tokens", type=int, default=EvalConfig.max_new_tokens)
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--batch-size", type=int, default=16,
                       help="sequences generated at once (default: %(default)s; 256 suits a large GPU)")
    pairs.add_argument("--out", type=Path, required=True, help="the pairs file to write (JSONL)")
    pairs.add_argument("--force", action="store_true", help="replace an existing --out file")
    pairs.set_defaults(handler=_preference_pairs)

    report = commands.add_parser("report", help="plots and an HTML summary of a training run")
    report.add_argument("run", type=Path)
    report.set_defaults(handler=_report)
    return parser


def _quality_flags(parser: argparse.ArgumentParser) -> None:
    from chef_genius.config_schema import EvalConfig

    parser.add_argument("--best-of", type=int, default=EvalConfig.best_of, metavar="N",
                        help="sample N recipes per prompt and keep the one the cookable verdict ranks best "
                             "(default: %(default)s)")
    parser.add_argument("--grounded", type=float, default=EvalConfig.grounded, metavar="PENALTY",
                        help="lower the logits of foods the recipe's own ingredient list lacks while the steps are "
                             "written (0: off; default: %(default)s)")
    parser.add_argument("--engine", choices=["transformers", "chef-genius"], default=EvalConfig.engine,
                        help="who writes the recipes: transformers' generate or chef-genius' own engine (continuous "
                             "batches, CUDA graphs; docs/generation.md) (default: %(default)s)")
