"""Training prompts: mixed instruction templates (improvement 9) and data augmentation
(improvement 4).

Every random choice for a training example is a pure function of (seed, epoch, example index):
`ExampleDraws` holds one row of uniform numbers per example of the whole training split, drawn
from a generator seeded with (seed, epoch), so an example draws the same whatever else is
selected, and a resumed run draws exactly what the interrupted one did. Validation and
`generate` use the canonical prompt: the first template, no augmentation.

A request names the dish and, when the recipe has them, its key food names, in the forms users
type: "Lasagna", "Lasagna with beef, ricotta", "a dish with chicken, rice and lemon".

Augmentation, with probability ``augmentation_prob``, applies one of:
- instruction-format variation: the request is phrased another way ("I'd like to cook ...");
- verb paraphrase: the imperative verb that opens a sentence of the steps becomes a synonym
  from a short list of swaps that stay correct (Mix -> Combine, Whisk -> Beat); nothing else in
  the target changes;
- cooking tip: a tip is added to the prompt, as in the seed's example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from chef_genius.recipe import Recipe

MAX_FOOD_NAMES = 6
AUGMENTATIONS = ("format", "paraphrase", "tip")

REQUEST_FORMATS = (
    "I would like to cook {text}",
    "Please give me a recipe for {text}",
    "{text}, step by step",
    "What do I need to make {text}?",
    "Teach me to make {text}",
)
COOKING_TIPS = (
    "Use fresh ingredients.",
    "Read the whole recipe before you start.",
    "Taste and adjust the seasoning at the end.",
    "Prepare and measure everything first.",
    "Let the pan heat before adding food.",
)
# Swaps that stay correct English and the same cooking in every context we found, applied only to
# the imperative verb that opens a sentence ("Mix the flour" -> "Combine the flour"). Context-free
# swaps of every verb taught broken text ("Bring to a bring to a boil", "over medium warm",
# "stir in in"): 22 % of paraphrased recipes had such a phrase.
# Swaps reviewed against the corpora: grate/shred ("Grate chicken with two forks"), beat/whisk
# ("Whisk with a mortar and pestle") and mix -> combine ("Combine well") were dropped.
VERB_PARAPHRASES = {
    "mix in": "stir in", "stir in": "mix in", "combine": "mix",
    "place": "put", "put": "place", "chill": "refrigerate", "refrigerate": "chill", "slice": "cut",
}
# A verb at the start of the text or of a sentence, followed by a space (not "Mixing", "Mix.").
_VERB_PATTERN = re.compile(r"(?:^|(?<=[.!?;] ))(" + "|".join(sorted(VERB_PARAPHRASES, key=len, reverse=True))
                           + r")(?= )", re.IGNORECASE)


def request_text(title: str, food_names: list[str] | tuple[str, ...], form: int = 1) -> str:
    """A user's request. form 0: the title; 1 (canonical): title with food names; 2: food names only."""
    names = list(food_names[:MAX_FOOD_NAMES])
    if form == 2 and names:
        listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
        return f"a dish with {listed}"
    names = [n for n in names if n.lower() not in title.lower()]  # "Lemon Chicken with chicken" says it twice
    if not names or form == 0:
        return title
    return f"{title} with {', '.join(names)}"


REFERENCE_MARK = "\n\nA similar recipe, to adapt: "


def with_reference(prompt: str, reference: str | None) -> str:
    """A prompt with its reference recipe after the request (`chef_genius.retrieval`): a prompt cut
    at the token limit loses the reference's tail, never the request."""
    return prompt if not reference else f"{prompt}{REFERENCE_MARK}{reference}"


def with_references(prompts: list[str], references: list[str | None] | None) -> list[str]:
    return prompts if references is None else [with_reference(p, r) for p, r in zip(prompts, references, strict=True)]


def request_of(prompt: str) -> str:
    """The request a prompt makes, without its reference recipe."""
    return prompt.split(REFERENCE_MARK, 1)[0]


def canonical_prompt(templates: list[str], title: str, food_names) -> str:
    """The prompt of validation and `generate`: first template, canonical request."""
    return templates[0].format(text=request_text(title, food_names))


def paraphrase_verbs(text: str) -> str:
    """Replace the verb that opens each sentence by a synonym (`VERB_PARAPHRASES`), keeping its
    case; nothing else in the text changes."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        replacement = VERB_PARAPHRASES[word.lower()]
        if word.isupper() and len(word) > 1:
            return replacement.upper()
        return replacement[0].upper() + replacement[1:] if word[0].isupper() else replacement

    return _VERB_PATTERN.sub(swap, text)


@dataclass
class ExampleDraws:
    """Uniform draws for every training example of one epoch: [template, request form,
    augment?, which augmentation, which variant]."""

    values: np.ndarray

    @classmethod
    def for_epoch(cls, seed: int, epoch: int, examples: int) -> ExampleDraws:
        return cls(np.random.default_rng([seed, epoch]).random((examples, 5)))


@dataclass(frozen=True)
class TrainingPrompt:
    prompt: str
    augmentation: str | None  # None, "format", "paraphrase" (of the target's steps) or "tip"


def training_prompt(title: str, food_names, draws: np.ndarray, templates: list[str], mixed_templates: bool,
                    augmentation_prob: float) -> TrainingPrompt:
    """The prompt of one training example, and its augmentation, from its five uniform draws.

    A "paraphrase" augmentation leaves the prompt alone: the caller rewrites the target's steps
    with `paraphrase_recipe`.
    """
    template = templates[int(draws[0] * len(templates))] if mixed_templates else templates[0]
    form = 1 if draws[1] < 0.6 else (0 if draws[1] < 0.8 else 2)
    request = request_text(title, food_names, form)
    augmentation = AUGMENTATIONS[int(draws[3] * len(AUGMENTATIONS))] if draws[2] < augmentation_prob else None
    variant = draws[4]
    if augmentation == "format":
        request = REQUEST_FORMATS[int(variant * len(REQUEST_FORMATS))].format(text=request)
    prompt = template.format(text=request)
    if augmentation == "tip":
        prompt = f"{prompt}. Tip: {COOKING_TIPS[int(variant * len(COOKING_TIPS))]}"
    return TrainingPrompt(prompt, augmentation)


def training_prompts(titles: list[str], food_names: list, draws: np.ndarray, templates: list[str],
                     mixed_templates: bool, augmentation_prob: float) -> tuple[list[str], list[str | None]]:
    """`training_prompt` of many examples (``draws``: one row each), the same prompts: template,
    request form and whether to augment are read from the draws as arrays (a NumPy scalar's
    arithmetic, per example, cost more than the prompt's text); only augmented examples go
    through `training_prompt`. Returns the prompts and each one's augmentation."""
    count = len(titles)
    chosen = ((draws[:, 0] * len(templates)).astype(np.int64) if mixed_templates  # int() of a non-negative float
              else np.zeros(count, dtype=np.int64))
    forms = np.where(draws[:, 1] < 0.6, 1, np.where(draws[:, 1] < 0.8, 0, 2))
    prompts = [templates[t].format(text=request_text(title, names, form)) for title, names, t, form
               in zip(titles, food_names, chosen.tolist(), forms.tolist(), strict=True)]
    augmentations: list[str | None] = [None] * count
    for i in np.flatnonzero(draws[:, 2] < augmentation_prob).tolist():
        drawn = training_prompt(titles[i], food_names[i], draws[i], templates, mixed_templates, augmentation_prob)
        prompts[i], augmentations[i] = drawn.prompt, drawn.augmentation
    return prompts, augmentations


def paraphrase_recipe(recipe: Recipe) -> Recipe:
    return Recipe(recipe.title, recipe.ingredients, [paraphrase_verbs(step) for step in recipe.steps], recipe.ner)
