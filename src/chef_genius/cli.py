"""The `chef-genius` command line. Bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from chef_genius import __version__
from chef_genius.encoding import USER_TOKENIZER_SETTING
from chef_genius.errors import UserError, read_user_text

EXIT_USER_ERROR = 2
# Import names of the `train` extras (pyproject.toml) and of numpy, which they bring: without them
# only prepare, score and --help run.
TRAIN_EXTRAS = frozenset({"torch", "transformers", "peft", "accelerate", "safetensors", "sacrebleu", "rouge_score",
                          "gguf", "jiwer", "matplotlib", "wandb", "tensorboard", "huggingface_hub", "numpy"})
EXIT_TRAINING_STOPPED = 3


def main(argv: list[str] | None = None) -> int:
    configure_allocator()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return args.handler(args)
    except UserError as error:
        message = " ".join(str(error).split("\n"))  # always one line
        print(f"chef-genius: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("chef-genius: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:  # a light install (no `train` extras) asked to train
        if error.name not in TRAIN_EXTRAS:  # a package itself missing, not a part of an installed one
            raise
        print(f"chef-genius: error: {args.command} needs the training stack ({error.name} is not installed): "
              "pip install 'chef-genius[train]'", file=sys.stderr)
        return EXIT_USER_ERROR


def _one_line_warnings(show: Callable) -> Callable:
    """A `warnings.showwarning` that says chef-genius' own warnings as one plain line on stderr
    (``chef-genius: warning: ...``), without Python's source path and code line, which look
    like a crash; other libraries' warnings go to ``show`` as before."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserWarning) and f"{os.sep}chef_genius{os.sep}" in str(filename):
            print(f"chef-genius: warning: {' '.join(str(message).split())}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def configure_allocator() -> None:
    """Ask PyTorch's CUDA allocator for expandable segments unless the user chose a setting.

    Batches of varying shapes leave the default allocator's fixed-size segments fragmented: on
    an H100 a 16k-token budget reserved 52.7 GiB for 33.4 GiB allocated. Must run before CUDA is
    first used, so `main` calls it at start (it imports nothing: `prepare`, `score` and `--help`
    run without torch)."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


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
    from chef_genius.config import DECODING_NAMES, FLAGS, EvalConfig
    from chef_genius.config_help import field_help

    for flag, (key, kind) in FLAGS.items():
        described = field_help(key).replace("%", "%%")  # argparse formats help with %
        if isinstance(kind, bool):
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


def _prepare(args: argparse.Namespace) -> int:
    from chef_genius.prepare import MARKER, PrepareOptions, format_report, prepare
    from chef_genius.sample import sample_path

    sources = list(args.sources) + ([sample_path()] if args.sample else [])
    if not sources:
        raise UserError("prepare: give at least one recipe file, or --sample")
    options = PrepareOptions(args.val_fraction, args.test_fraction, args.fmt, args.columns,
                             progress=not args.quiet, workers=args.workers, overwrite=args.overwrite,
                             encoding=args.encoding)
    report = prepare(sources, args.out, options)
    if not args.quiet:
        print(format_report(report))
        print(f"\nwrote {args.out}/ (train.arrow, val.arrow, test.arrow, data_report.json, rejects.jsonl, "
              f"{MARKER})")
    return 0


def _score(args: argparse.Namespace) -> int:
    from chef_genius.metrics import score_recipe, score_text
    from chef_genius.recipe import to_dict
    from chef_genius.sources import Rejected, recipe_from_object

    text = _read_text(args.file)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            obj = json.loads(text)
        except ValueError as error:
            raise UserError(f"{args.file}: invalid JSON: {error}") from None
        recipe = recipe_from_object(obj[0] if isinstance(obj, list) and obj else obj)
        if isinstance(recipe, Rejected):
            raise UserError(f"{args.file}: not a recipe ({recipe.reason.replace('_', ' ')})")
        scores, parsed = score_recipe(recipe), recipe
    else:
        from chef_genius.recipe import parse_recipe

        scores, parsed = score_text(text), parse_recipe(text)
    if args.json:
        print(json.dumps({"recipe": to_dict(parsed), "metrics": scores.as_dict()}, indent=2, ensure_ascii=False))
    else:
        print(f"{parsed.title or '(no title)'}: {len(parsed.ingredients)} ingredients, {len(parsed.steps)} steps")
        for name, value in scores.as_dict().items():
            print(f"  {name:<22} {value:.2f}")
    return 0


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    return read_user_text(path, encoding="utf-8-sig")


TINY_NOTE = """Note: the `tiny` model starts from random weights and trains for a minute on the CPU: the
recipes above show every part of chef-genius working, not a recipe model. For a real one, see
docs/quality.md: SmolLM2-135M-Instruct fine-tuned with
  chef-genius train --model SmolLM2-135M-Instruct.Q4_1.gguf --data prepared/"""


def _train(args: argparse.Namespace) -> int:
    import yaml

    from chef_genius.config import FLAGS, build_config
    from chef_genius.config_help import commented_yaml

    overrides = {key: getattr(args, key) for key, _ in FLAGS.values() if getattr(args, key) is not None}
    for assignment in args.set:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise UserError(f"--set: '{assignment}' is not KEY=VALUE")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {key}: cannot read value '{value}'") from None
    config = build_config(args.config, overrides)
    if args.print_config:
        print(commented_yaml(config), end="")
        return 0
    if config.model.name == "tiny":
        from chef_genius.config import tiny_settings

        applied = tiny_settings(config)
        if applied:
            print(f"--model tiny: a small random T5 for a quick CPU run, with its own settings (flags, --set and "
                  f"--config override them): {' '.join(applied)}", flush=True)
    _quiet_libraries()
    if args.plan:
        return _print_plan(config)
    from chef_genius.errors import TrainingStopped
    from chef_genius.training.interrupt import TrainingInterrupted
    from chef_genius.training.trainer import run_training

    try:
        result = run_training(config)
    except TrainingInterrupted as error:
        if os.environ.get("RANK", "0") == "0":
            print(f"chef-genius: {error}", file=sys.stderr)
        return 128 + error.signal_number  # the shell's code for a signal: 130 Ctrl-C, 143 SIGTERM
    except TrainingStopped as error:
        print(f"chef-genius: training stopped: {error}", file=sys.stderr)
        return EXIT_TRAINING_STOPPED
    if os.environ.get("RANK", "0") != "0":
        return 0
    from chef_genius.report import write_report

    write_report(config.output_dir)
    if config.model.name == "tiny" and result.last_samples:
        print(result.last_samples + "\n\n" + TINY_NOTE)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; best val_loss "
          f"{result.best_val_loss if result.best_val_loss is None else round(result.best_val_loss, 4)}"
          f"{' (stopped early)' if result.stopped_early else ''}\nadapter/model: {result.final_dir} (weights of "
          f"{result.final_weights})\n"
          f"best checkpoint: {result.best_checkpoint}\nreport: {Path(config.output_dir) / 'report.html'}")
    return 0


def _run_config(run: Path, folder: Path | None = None) -> dict:
    """The config a run trained with, as plain data: a checkpoint's state, else the run's
    config.yaml (beside the weights or up to two folders above); {} for a bare model or adapter.
    ``folder``: the weights folder loaded for ``run``."""
    import yaml

    places = [p for p in (folder, run) if p is not None]
    for place in places:
        state = place / "trainer_state.json"
        if state.is_file():
            with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
                config = json.loads(state.read_text(encoding="utf-8"))["config"]
                if isinstance(config, dict):
                    return config
    candidates = [c / "config.yaml" for p in places for c in (p, p.parent, p.parent.parent)]
    for candidate in candidates:
        if candidate.is_file():
            with contextlib.suppress(OSError, yaml.YAMLError):
                config = yaml.safe_load(candidate.read_text())
                if isinstance(config, dict):
                    return config
    return {}


def _run_templates(run: Path, folder: Path | None = None) -> list[str]:
    """The templates a run trained with (`_run_config`), else the default ones."""
    from chef_genius.config import SEED_TEMPLATES

    data = _run_config(run, folder).get("data")
    return (data.get("templates") if isinstance(data, dict) else None) or SEED_TEMPLATES


def _run_token_limits(run: Path, folder: Path | None = None) -> tuple[int, int]:
    """(max_source_tokens, max_target_tokens) a run trained with, so that `evaluate`'s loss is
    measured as training's was; 512 / 512 for a model or adapter without a run config."""
    model = _run_config(run, folder).get("model")
    limits = [model.get(key) if isinstance(model, dict) else None for key in ("max_source_tokens",
                                                                               "max_target_tokens")]
    return tuple(value if isinstance(value, int) and value > 0 else 512 for value in limits)


def _quality_flags(parser: argparse.ArgumentParser) -> None:
    from chef_genius.config import EvalConfig

    parser.add_argument("--best-of", type=int, default=EvalConfig.best_of, metavar="N",
                        help="sample N recipes per prompt and keep the one the cookable verdict ranks best "
                             "(default: %(default)s)")
    parser.add_argument("--grounded", type=float, default=EvalConfig.grounded, metavar="PENALTY",
                        help="lower the logits of foods the recipe's own ingredient list lacks while the steps are "
                             "written (0: off; default: %(default)s)")
    parser.add_argument("--engine", choices=["transformers", "chef-genius"], default=EvalConfig.engine,
                        help="who writes the recipes: transformers' generate or chef-genius' own engine (continuous "
                             "batches, CUDA graphs; docs/generation.md) (default: %(default)s)")


def _check_quality_flags(args: argparse.Namespace) -> None:
    if args.best_of <= 0:
        raise UserError(f"--best-of must be positive, got {args.best_of}")
    if args.grounded < 0:
        raise UserError(f"--grounded must be >= 0, got {args.grounded}")


def _generate(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from chef_genius.augment import canonical_prompt
    from chef_genius.config import EvalConfig
    from chef_genius.cookable import request_foods
    from chef_genius.inference import load_run
    from chef_genius.recipe import to_dict, to_markdown
    from chef_genius.sampling import sample_recipes

    if args.prompt is not None and not args.prompt.strip():
        raise UserError("generate: the prompt is empty; say what to cook, e.g. \"pasta with tomatoes\"")
    requests = [args.prompt.strip()] if args.prompt else []
    if args.file:
        requests += [line.strip() for line in _read_text(args.file).splitlines() if line.strip()]
    if not requests:
        raise UserError("generate: give a prompt or --file" + (f" ({args.file} holds no prompt)" if args.file else ""))
    if args.max_new_tokens <= 0:
        raise UserError("--max-new-tokens must be positive")
    _check_quality_flags(args)
    loaded = load_run(args.run)
    templates = _run_templates(args.run, loaded.folder)
    prompts = [canonical_prompt(templates, request, []) for request in requests]
    config = EvalConfig(decoding=args.decoding, max_new_tokens=args.max_new_tokens, best_of=args.best_of,
                        grounded=args.grounded, engine=args.engine)
    samples = sample_recipes(loaded.model, loaded.tokenizer, loaded.family, prompts, config, seed=args.seed,
                             foods=[request_foods(r) for r in requests])
    if args.json:
        print(json.dumps([{"prompt": r, **to_dict(s.recipe),
                           "checks": {"usable": s.checks.usable, **s.cookable.as_dict()}}
                          for r, s in zip(requests, samples, strict=True)], indent=2, ensure_ascii=False))
    else:
        print("\n".join(to_markdown(s.recipe) for s in samples), end="")
        for request, s in zip(requests, samples, strict=True):  # the checks on stderr: stdout stays the recipes
            failed = "; ".join(s.cookable.failed.values())
            verdict = "cookable" if s.cookable.cookable else f"NOT cookable ({failed})"
            print(f"chef-genius: {request[:60]}: {'usable' if s.checks.usable else 'NOT usable'}, {verdict}",
                  file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from chef_genius.evaluation import evaluate_run, format_evaluation

    if args.max_examples <= 0 or args.samples <= 0:
        raise UserError("--max-examples and --samples must be positive")
    _check_quality_flags(args)
    from chef_genius.inference import model_folder

    folder = model_folder(args.run)
    max_source, max_target = _run_token_limits(args.run, folder)
    result = evaluate_run(args.run, args.data, args.split, args.max_examples, args.samples, args.decoding,
                          args.max_new_tokens, _run_templates(args.run, folder), max_source_tokens=max_source,
                          max_target_tokens=max_target, best_of=args.best_of, grounded=args.grounded,
                          engine=args.engine)
    out = args.out
    if out is None:  # beside the run; a checkpoint folder is no place for it (pruning removes it)
        checkpoint = (folder / "trainer_state.json").is_file()
        out = (folder.parent.parent / f"evaluation-{result['split']}-{folder.name}.json" if checkpoint
               else args.run / f"evaluation-{result['split']}.json")
    try:
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise UserError(f"{out}: cannot write the evaluation ({error.strerror or error})") from None
    print(format_evaluation(result))
    print(f"wrote {out}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    """The LoRA adapter merged into its base model (`chef_genius.export.export_merged`)."""
    _quiet_libraries()
    from chef_genius.export import export_merged
    from chef_genius.inference import model_folder

    folder = model_folder(args.run)
    if not (folder / "adapter_config.json").is_file():
        raise UserError(f"{args.run}: holds a full model, not a LoRA adapter: nothing to merge")
    export_merged(args.run, args.out, args.overwrite, command="merge")
    print(f"merged {folder} into a standalone model: {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from chef_genius.serve.server import serve

    return serve(args, _run_templates)

def _export(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from chef_genius.export import export_gguf, export_merged

    if args.fmt == "merged":
        if args.outtype is not None:
            raise UserError("--outtype applies to --format gguf only")
        out = export_merged(args.run, args.out, args.overwrite)
        print(f"wrote the merged model {out}/")
        return 0
    from chef_genius.inference import model_folder

    templates = _run_templates(args.run, model_folder(args.run))
    gguf_file, modelfile = export_gguf(args.run, args.out, args.outtype or "f16", args.overwrite, templates)
    size = gguf_file.stat().st_size / 2**20
    print(f"wrote {gguf_file} ({size:.1f} MiB, {args.outtype or 'f16'}) and {modelfile}\n"
          f"  llama.cpp: llama-cli -m {gguf_file}\n"
          f"  Ollama:    cd {modelfile.parent} && ollama create NAME -f Modelfile")
    return 0


def _preference_pairs(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from chef_genius.inference import model_folder
    from chef_genius.preference_pairs import build_pairs, check_output

    check_output(args.out, args.force)  # before the model is loaded
    report = build_pairs(args.run, args.data, args.split, args.max_examples, args.out,
                         _run_templates(args.run, model_folder(args.run)), args.samples, args.keep_all, args.decoding,
                         args.max_new_tokens, args.seed, args.force, args.batch_size)
    print(f"{report.prompts} prompts of {args.data} ({args.split}), {report.samples} samples: {report.rejected} not "
          f"cookable; wrote {report.pairs} pairs to {report.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from chef_genius.report import write_report

    page = write_report(args.run)
    print(f"wrote {page} and {args.run / 'plots'}/")
    return 0


def _print_plan(config) -> int:
    import tempfile

    from chef_genius.training.parts import plan_only

    with tempfile.TemporaryDirectory() as scratch:
        plan = plan_only(config, Path(scratch))
    rows = plan.rows()
    if plan.by_step:
        print(plan.describe())
    print(f"{'epoch':>5}  {'steps':<13} {'difficulty':<10} {'quality >=':>10} {'examples':>9} {'optimizer steps':>15}")
    for row in rows:
        note = "  (relaxed from {} >= {:.2f})".format(*row["relaxed_from"]) if row["relaxed_from"] else ""
        steps = f"{row['first_step']:,}-{row['last_step']:,}"
        print(f"{row['epoch']:>5}  {steps:<13} {row['difficulty']:<10} {row['quality_threshold']:>10.3f} "
              f"{row['examples']:>9,} {row['optimizer_steps']:>15,}{note}")
    o = config.optim
    per_step = (f"{o.max_tokens:,} tokens" if o.max_tokens else
                f"{o.batch_size} {'pairs' if config.preference.pairs is not None else 'examples'}")
    planned = sum(plan.steps_per_epoch)
    print(f"total {planned:,} optimizer steps ({per_step} x {o.gradient_accumulation_steps} accumulation per step)")
    if o.max_steps is not None and o.max_steps < planned:
        done, epoch = 0, 0
        while done + plan.steps_per_epoch[epoch] < o.max_steps:
            done, epoch = done + plan.steps_per_epoch[epoch], epoch + 1
        print(f"--max-steps {o.max_steps:,}: training stops in epoch {epoch}, after {o.max_steps - done:,} of its "
              f"{plan.steps_per_epoch[epoch]:,} steps")
    return 0


def _quiet_libraries() -> None:
    """Keep library progress bars and deprecation chatter out of the training output."""
    if "TOKENIZERS_PARALLELISM" in os.environ:  # the user's own choice: kept everywhere (encoding.tokenizer_threads)
        os.environ.setdefault(USER_TOKENIZER_SETTING, os.environ["TOKENIZERS_PARALLELISM"])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    with contextlib.suppress(ImportError):  # only the training commands need transformers
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
