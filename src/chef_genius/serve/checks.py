"""The verdicts a served recipe comes with, one entry per verdict in ``checks``.

Each verdict is ``{"passed": bool, "reasons": [{"check", "passed", "detail"}...], "values": {...}}``:
``usable`` (`chef_genius.usability.check`) and ``cookable``
(`chef_genius.cookable.check_cookable`). A later verdict is one more
entry; the page shows whatever entries come.
"""

from __future__ import annotations

from chef_genius.recipe import Recipe


def usable(recipe: Recipe, stopped: bool) -> dict:
    from chef_genius import usability as u

    result = u.check(recipe, stopped=stopped)
    sentences = u.step_sentences(recipe)
    parts = [
        ("title", bool(recipe.title), recipe.title or "no title"),
        ("ingredients", len(recipe.ingredients) >= u.MIN_ITEMS,
         f"{len(recipe.ingredients)} ingredient lines (at least {u.MIN_ITEMS})"),
        ("steps", sentences >= u.MIN_ITEMS, f"{sentences} step sentences (at least {u.MIN_ITEMS})"),
        ("repetition", result.repeated_lines <= u.MAX_REPEATED_LINES,
         f"{result.repeated_lines:.0%} of lines repeat an earlier line (at most {u.MAX_REPEATED_LINES:.0%})"),
        ("finished", stopped, "ended by itself" if stopped else "cut off at the token limit"),
        ("ingredients_used", result.ingredients_used >= u.MIN_INGREDIENTS_USED,
         f"the steps use {result.ingredients_used:.0%} of the ingredients (at least {u.MIN_INGREDIENTS_USED:.0%})"),
    ]
    return {"passed": result.usable, "reasons": [{"check": c, "passed": p, "detail": d} for c, p, d in parts],
            "values": result.as_dict()}


def cookable(recipe: Recipe, request_foods: list[str], stopped: bool) -> dict:
    """The cookable verdict: passed, each check with why it failed, and the raw values."""
    from chef_genius.cookable import CHECKS, check_cookable

    result = check_cookable(recipe, request_foods=request_foods, stopped=stopped)
    reasons = [{"check": name, "passed": name not in result.failed, "detail": result.failed.get(name, "")}
               for name in CHECKS]
    return {"passed": result.cookable, "reasons": reasons, "values": result.as_dict()}


def recipe_checks(recipe: Recipe, request_foods: list[str], stopped: bool) -> dict:
    return {"usable": usable(recipe, stopped), "cookable": cookable(recipe, request_foods, stopped)}
