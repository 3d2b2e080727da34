"""Every reader on the Wikibooks rows of tests/data (in their own and RecipeNLG's layout), plus
hand-written bad rows and bad files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chef_genius.errors import UserError
from chef_genius.quality import hygiene_problems, quality_score
from chef_genius.recipe import Recipe
from chef_genius.sources import Rejected, open_source, read_rows
from tests.conftest import (
    JUNK,
    RECIPENLG,
    SHARED_DATA,
    SHARED_RECIPENLG,
    SHARED_WIKIBOOKS,
    TEST_DATA,
    WIKIBOOKS,
    needs_shared,
)


def recipenlg_rows(n: int) -> list[dict]:
    with open(RECIPENLG, newline="", encoding="utf-8") as handle:
        return [row for _, row in zip(range(n), csv.DictReader(handle), strict=False)]


def read(path: Path, **kwargs) -> list[tuple[int, Recipe | Rejected]]:
    return list(read_rows(open_source(path, progress=False, **kwargs)))


def recipes_of(rows) -> list[Recipe]:
    return [item for _, item in rows if isinstance(item, Recipe)]


def test_recipenlg_full_layout():
    reader = open_source(RECIPENLG, progress=False)
    assert reader.format_name == "recipenlg"
    rows = list(read_rows(reader))
    expected = recipenlg_rows(10_000)
    assert len(rows) == len(expected) > 200
    line, first = rows[0]
    assert line == 2  # line 1 is the header
    raw = expected[0]
    assert first.title == raw["title"]
    assert first.ingredients == tuple(json.loads(raw["ingredients"]))
    assert first.steps == tuple(json.loads(raw["directions"]))
    assert first.ner == tuple(json.loads(raw["NER"])) and first.ner
    assert first.source == raw["source"] == "Wikibooks"
    assert all(isinstance(item, Recipe) for _, item in rows)
    assert [item.title for _, item in rows] == [r["title"] for r in expected]


@needs_shared
def test_recipenlg_full_layout_on_the_real_sample():
    rows = list(read_rows(open_source(SHARED_RECIPENLG, progress=False)))
    assert len(rows) == 999
    line, first = rows[0]
    assert line == 2
    assert first.title == "No-Bake Nut Cookies"
    assert first.ingredients[0] == "1 c. firmly packed brown sugar"
    assert len(first.ingredients) == 6 and len(first.steps) == 6
    assert first.ner[:2] == ("brown sugar", "milk")
    assert first.source == "Gathered"
    assert all(isinstance(item, Recipe) for _, item in rows)


def test_recipenlg_without_index_link_and_source(tmp_path):
    path = tmp_path / "slim.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "ingredients", "directions", "NER"])
        for row in recipenlg_rows(20):
            writer.writerow([row["title"], row["ingredients"], row["directions"], row["NER"]])
    recipes = recipes_of(read(path))
    assert len(recipes) == 20
    assert recipes[0].title == recipenlg_rows(1)[0]["title"] and recipes[0].source == ""


def test_foodcom_layout_with_python_literal_lists(tmp_path):
    path = tmp_path / "RAW_recipes.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "id", "minutes", "contributor_id", "submitted", "tags", "nutrition",
                         "n_steps", "steps", "description", "ingredients", "n_ingredients"])
        for i, row in enumerate(recipenlg_rows(10)):
            steps, ner = json.loads(row["directions"]), json.loads(row["NER"])
            writer.writerow([row["title"].lower(), i, 30, 1, "2010-01-01", "['easy']", "[1.0]",
                             len(steps), repr(steps), "", repr(ner), len(ner)])
    reader = open_source(path, progress=False)
    assert reader.format_name == "foodcom"
    recipes = recipes_of(read_rows(reader))
    assert len(recipes) == 10
    first = recipenlg_rows(1)[0]
    assert recipes[0].title == first["title"].lower()
    assert recipes[0].ingredients == tuple(json.loads(first["NER"]))  # Food.com lists the food alone
    assert recipes[0].steps == tuple(json.loads(first["directions"]))


def test_python_literals_are_never_evaluated(tmp_path):
    path = tmp_path / "evil.csv"
    path.write_text('name,ingredients,steps\nX,"[__import__(\'os\').system(\'echo hi\')]","[\'Mix.\']"\n')
    (_, item), = read(path)
    assert item == Rejected("unparseable_cell", item.detail)


def test_json_list_with_directions_as_numbered_text(tmp_path):
    rows = recipenlg_rows(5)
    objects = [{"title": r["title"], "ingredients": json.loads(r["ingredients"]),
                "instructions": " ".join(f"{i}. {s}" for i, s in enumerate(json.loads(r["directions"]), 1))}
               for r in rows]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(objects))
    recipes = recipes_of(read(path))
    assert [r.title for r in recipes] == [r["title"].strip() for r in rows]
    assert recipes[0].steps == tuple(json.loads(rows[0]["directions"]))


def test_wikibooks_dict_keyed_by_title(wikibooks):
    rows = read(WIKIBOOKS)
    assert len(rows) == len(wikibooks) == 250
    recipes = recipes_of(rows)
    first = recipes[0]
    assert first.title == "'Out of Salad Dressing' Salad Dressing"
    assert first.ingredients[0] == "1 ½ lemons, juiced"  # the unicode fraction survives
    rejected = [item.reason for _, item in rows if isinstance(item, Rejected)]
    assert len(recipes) + len(rejected) == len(wikibooks)
    assert [r.title for r in recipes] == [v["title"] for v in wikibooks.values()]
    assert set(rejected) <= {"missing_ingredients", "missing_steps", "missing_title"}


def test_schema_org_recipe_with_howto_steps_and_sections(tmp_path, wikibooks):
    source = wikibooks["Cookbook:20-Minute Beef Stroganoff"]
    steps = source["steps"]
    obj = {"@context": "https://schema.org", "@graph": [
        {"@type": "WebPage", "name": "page"},
        {"@type": ["Recipe"], "name": source["title"], "recipeIngredient": source["ingredients"],
         "recipeInstructions": [{"@type": "HowToStep", "text": steps[0]},
                                {"@type": "HowToSection", "name": "Sauce",
                                 "itemListElement": [{"@type": "HowToStep", "text": s} for s in steps[1:]]}]},
    ]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(obj))
    (_, recipe), = read(path)
    assert recipe.title == "20-Minute Beef Stroganoff"
    assert recipe.steps == tuple(Recipe(steps=steps).steps)
    assert recipe.ingredients[1] == "1 teaspoon olive oil"


def test_schema_org_single_object_with_string_instructions(tmp_path, wikibooks):
    source = wikibooks["Cookbook:20-Minute Beef Stroganoff"]
    obj = {"@type": "Recipe", "name": source["title"], "recipeIngredient": source["ingredients"],
           "recipeInstructions": "\n".join(source["steps"])}
    path = tmp_path / "one.json"
    path.write_text(json.dumps(obj))
    (_, recipe), = read(path)
    assert len(recipe.steps) == len(source["steps"])


def test_recipe_scrapers_output_as_jsonl(tmp_path):
    rows = recipenlg_rows(3)
    path = tmp_path / "scraped.jsonl"
    path.write_text("\n".join(json.dumps({"title": r["title"], "ingredients": json.loads(r["ingredients"]),
                                          "instructions_list": json.loads(r["directions"]),
                                          "instructions": "ignored"}) for r in rows))
    reader = open_source(path, progress=False)
    assert reader.format_name == "jsonl"
    recipes = recipes_of(read_rows(reader))
    assert recipes[2].title == rows[2]["title"] and recipes[2].steps == tuple(json.loads(rows[2]["directions"]))


def test_original_project_jsonl(tmp_path):
    row = recipenlg_rows(1)[0]
    ingredients, steps = json.loads(row["ingredients"]), json.loads(row["directions"])
    output = ("Title: " + row["title"] + "\nIngredients:\n" + "\n".join(f"- {i}" for i in ingredients)
              + "\nInstructions:\n" + "\n".join(f"{n}. {s}" for n, s in enumerate(steps, 1)))
    path = tmp_path / "v1.jsonl"
    path.write_text(json.dumps({"input": "Create a recipe: cookies", "output": output, "quality_score": 0.9}))
    (_, recipe), = read(path)
    assert recipe == Recipe(row["title"], ingredients, steps)


@pytest.mark.parametrize("cell_style", ["json", "python", "numbered", "lines"])
def test_mapped_csv_cells(tmp_path, cell_style):
    row = recipenlg_rows(1)[0]
    ingredients, steps = json.loads(row["ingredients"]), json.loads(row["directions"])
    render = {"json": json.dumps, "python": repr,
              "numbered": lambda items: " ".join(f"{i}. {s}" for i, s in enumerate(items, 1)),
              "lines": "\n".join}[cell_style]
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Recipe Name", "Stuff", "How"])
        writer.writerow([row["title"], render(ingredients) if cell_style != "numbered" else json.dumps(ingredients),
                         render(steps)])
    with pytest.raises(UserError, match="lacks the needed columns"):
        open_source(path)
    (_, recipe), = read(path, columns="title=Recipe Name,ingredients=Stuff,steps=How")
    assert recipe == Recipe(row["title"], ingredients, steps)


def test_bad_rows_are_rejected_with_reason_and_line(tmp_path):
    good = recipenlg_rows(2)
    header = ",title,ingredients,directions,link,source,NER\n"

    def line(idx, title, ingredients, directions):
        return ",".join(['"' + str(x).replace('"', '""') + '"' for x in
                         (idx, title, ingredients, directions, "café.example", "Gathered", "[]")]) + "\n"

    text = (header + line(0, good[0]["title"], good[0]["ingredients"], good[0]["directions"])
            + line(1, "Broken", '["1 egg", "2 cups', '["Mix."]')          # unparseable cell
            + line(2, "", '["1 egg"]', '["Mix."]')                        # missing title
            + line(3, "No ingredients", "[]", '["Mix."]')                  # missing ingredients
            + line(4, "Huge", json.dumps(["x" * 1_000_000]), '["Mix."]')  # a 1 MB field
            + line(5, good[1]["title"], good[1]["ingredients"], good[1]["directions"]))
    path = tmp_path / "bad.csv"
    # Bytes that are not UTF-8 in a UTF-8 file (it has UTF-8 text: "café"): only that row goes.
    raw = text.encode("utf-8").replace(b"No ingredients", b"No ingr\xff\xfedients")
    path.write_bytes(raw)
    rows = read(path)
    reasons = [(pos, item.reason) for pos, item in rows if isinstance(item, Rejected)]
    assert reasons == [(3, "unparseable_cell"), (4, "missing_title"), (5, "non_utf8"), (6, "field_too_long")]
    assert [item.title for _, item in rows if isinstance(item, Recipe)] == [good[0]["title"], good[1]["title"]]


def test_junk_rows_are_read_not_rejected_and_their_noise_is_seen():
    rows = read(JUNK)
    assert len(rows) == 10 and all(isinstance(item, Recipe) for _, item in rows)
    junk = recipes_of(rows)
    for recipe in junk:
        prose = " ".join((recipe.title, *recipe.steps))
        if "!!" in prose:
            assert "repeated_punctuation" in hygiene_problems(recipe), recipe.title
    clean = recipes_of(read(RECIPENLG))
    assert sum(map(quality_score, junk)) / len(junk) < sum(map(quality_score, clean)) / len(clean) - 0.05


@needs_shared
def test_the_real_junk_rows_are_read_not_rejected():
    rows = read(SHARED_DATA / "recipenlg_junk_rows.csv")
    assert len(rows) == 10 and all(isinstance(item, Recipe) for _, item in rows)


def test_wrong_cell_count_is_a_malformed_row(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text('title,ingredients,directions\n"A","[""1 egg""]","[""Mix.""]"\n"B","[""1 egg""]"\n')
    reasons = [item.reason if isinstance(item, Rejected) else "ok" for _, item in read(path)]
    assert reasons == ["ok", "malformed_row"]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_text("a,b,c\n1,2,3\n"), "lacks the needed columns"),
])
def test_unreadable_files_raise_one_clear_error(tmp_path, setup, message):
    path = tmp_path / "recipes.csv"
    setup(path)
    with pytest.raises(UserError, match=message) as error:
        open_source(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_mapped_column_missing_from_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("Name,Ingr,Steps\nA,[],[]\n")
    with pytest.raises(UserError, match="missing column"):
        read(path, columns="title=Name,ingredients=Ingredients,steps=Steps")
    with pytest.raises(UserError, match="no column given for steps"):
        open_source(path, columns="title=Name,ingredients=Ingr")


def test_truncated_json_keeps_the_recipes_before_the_break(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"title": "A", "ingredients": ["1 egg"], "steps": ["Mix."]}, {"title": ')
    rows = read(path)
    assert [type(item).__name__ for _, item in rows] == ["Recipe", "Rejected"]
    assert rows[1] == (2, Rejected("invalid_json", rows[1][1].detail)) and "rest of the file" in rows[1][1].detail


def test_json_broken_from_the_start_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"title": }')
    with pytest.raises(UserError, match="invalid JSON"):
        read(path)


@pytest.mark.skipif(not SHARED_WIKIBOOKS.is_file(), reason=f"needs the Wikibooks dump at {SHARED_WIKIBOOKS}")
def test_the_test_data_is_rebuilt_byte_for_byte_from_wikibooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_test_data", TEST_DATA / "make_test_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build(SHARED_WIKIBOOKS)
    assert sorted(built) == sorted(p.name for p in (RECIPENLG, JUNK, WIKIBOOKS))
    for name, text in built.items():
        assert (TEST_DATA / name).read_text(encoding="utf-8") == text, name
    assert sum(len(t.encode()) for t in built.values()) < 1_000_000


@pytest.mark.parametrize("fields, detail", [
    ({"ingredients": ["2 eggs", ["1 cup", "flour"]]}, "ingredients: item 2 is not text (a list)"),
    ({"ingredients": ["2 eggs", True]}, "ingredients: item 2 is not text (true/false)"),
    ({"ingredients": [3, "eggs"]}, "ingredients: item 1 is not text (a number)"),
    ({"steps": ["Mix.", 2.5]}, "steps: item 2 is not text (a number)"),
    ({"steps": ["Mix.", {"seconds": 30}]}, "steps: item 2 is not text (an object without text)"),
    ({"steps": '["Mix.", [1, 2]]'}, "steps: item 2 is not text (a list)"),
    ({"ingredients": {"egg": 1}}, "ingredients: not a list or text (an object)"),
    ({"title": 42}, "title: not text"),
    ({"title": ["Soup"]}, "title: not text"),
])
def test_ill_typed_json_items_are_rejected_not_printed_as_python(tmp_path, fields, detail):
    recipe = {"title": "Soup", "ingredients": ["2 leeks", "1 potato"], "steps": ["Simmer.", "Blend."], **fields}
    path = tmp_path / "items.json"
    path.write_text(json.dumps([recipe, {"title": "Toast", "ingredients": ["bread"], "steps": ["Toast it."]}]))
    (_, first), (_, second) = read(path)
    assert first == Rejected("unparseable_cell", detail)
    assert isinstance(second, Recipe)


def test_schema_org_steps_and_nulls_are_still_text(tmp_path):
    recipe = {"name": "Soup", "recipeIngredient": ["2 leeks", None], "recipeInstructions": [
        {"@type": "HowToStep", "text": "Simmer."}, {"@type": "HowToStep", "name": "Blend", "text": ""}]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(recipe))
    (_, parsed), = read(path)
    assert parsed.ingredients == ("2 leeks",) and parsed.steps == ("Simmer.", "Blend")


def test_a_recipenlg_cell_that_is_not_a_json_list_is_rejected(tmp_path):
    good = recipenlg_rows(1)[0]
    path = tmp_path / "cells.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "title", "ingredients", "directions", "link", "source", "NER"])
        writer.writerow([0, good["title"], good["ingredients"], good["directions"], "l", "Gathered", good["NER"]])
        writer.writerow([1, "Cake", "flour, sugar, [eggs", good["directions"], "l", "Gathered", "[]"])
        writer.writerow([2, "Bread", good["ingredients"], "Knead. Bake.", "l", "Gathered", "[]"])
    rows = read(path)
    assert isinstance(rows[0][1], Recipe)
    assert [item for _, item in rows[1:]] == [Rejected("unparseable_cell", "ingredients: not a JSON list"),
                                               Rejected("unparseable_cell", "steps: not a JSON list")]
    # A CSV of one's own (no NER column) keeps its free-text cells.
    mine = tmp_path / "mine.csv"
    mine.write_text('title,ingredients,directions\nCake,"flour\nsugar","Mix. Bake."\n', encoding="utf-8")
    (_, cake), = read(mine)
    assert cake.ingredients == ("flour", "sugar") and cake.steps == ("Mix. Bake.",)
