"""The handlers of the commands but `train` (training.py): prepare, score, generate, evaluate, merge,
serve, export, preference-pairs and report. Each imports what it needs when it runs: `prepare`,
`score` and `--help` run without torch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chef_genius.cli.environment import _quiet_libraries
from chef_genius.cli.runs import _run_references, _run_templates, _run_token_limits
from chef_genius.errors import UserError, read_user_text


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


def _check_quality_flags(args: argparse.Namespace) -> None:
    if args.best_of <= 0:
        raise UserError(f"--best-of must be positive, got {args.best_of}")
    if args.grounded < 0:
        raise UserError(f"--grounded must be >= 0, got {args.grounded}")


def _generate(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from chef_genius.augment import canonical_prompt, with_references
    from chef_genius.config_schema import EvalConfig
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
    foods = [request_foods(r) for r in requests]
    references = _run_references(args.run, loaded.folder)
    if references is not None:
        prompts = with_references(prompts, references.for_requests(requests, foods))
    config = EvalConfig(decoding=args.decoding, max_new_tokens=args.max_new_tokens, best_of=args.best_of,
                        grounded=args.grounded, engine=args.engine)
    samples = sample_recipes(loaded.model, loaded.tokenizer, loaded.family, prompts, config, seed=args.seed,
                             foods=foods)
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
                          engine=args.engine, judge_model=args.judge_model,
                          retrieval=_run_references(args.run, folder))
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

    return serve(args, _run_templates, _run_references)

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
