"""Credit lines among a site's steps ("Photograph by ...", "Adapted from ...") are not steps:
`prepare` drops them, and a recipe left with no step is rejected as before."""

from __future__ import annotations

import json

from chef_genius.sources.records import Rejected, build_recipe, is_credit


def test_credit_lines_leave_the_steps_and_real_steps_stay():
    recipe = build_recipe("Grilled Corn", ["4 ears corn", "2 tbsp butter"],
                          ["Grill the corn 10 minutes, turning.", "Brush with butter and serve.",
                           "Photograph by Kate Mathis; Illustration by Brown Bird Design",
                           "Adapted from Williams-Sonoma Essentials of Grilling (Oxmoor House, 2010)."])
    assert recipe.steps == ("Grill the corn 10 minutes, turning.", "Brush with butter and serve.")
    for step in ("Photograph the cake before slicing it.", "Adapt the heat to your grill and cook 5 minutes.",
                 "Stir in the photographs of your family. " * 10,
                 "Adapted from Grandma's card: whisk the eggs and sugar until pale."):
        assert not is_credit(step)
    assert is_credit("Recipe courtesy of Ina Garten") and is_credit("  Photographs by Kang Kim")
    only_credits = build_recipe("Toast", ["1 slice bread"], ["Photograph by Kang Kim"])
    assert isinstance(only_credits, Rejected) and only_credits.reason == "missing_steps"


def test_prepare_drops_credit_lines(tmp_path):
    from chef_genius.dataset.collate import load_split
    from chef_genius.prepare import prepare

    rows = [{"title": f"Soup {i}", "ingredients": ["1 cup water", f"{i} carrots"],
             "directions": ["Boil the water.", f"Add {i} carrots and simmer 20 minutes.", "Photograph by Ellie Miller"]}
            for i in range(1, 41)]
    source = tmp_path / "site.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare([source], tmp_path / "out")
    table = load_split(tmp_path / "out", "train")
    steps = [step for i in range(len(table)) for step in table.recipe(i).steps]
    assert len(table) > 20 and len(steps) == 2 * len(table)
    assert not any("Photograph" in step for step in steps)
