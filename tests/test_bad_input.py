"""A corpus of malformed files and configs: each gives a clear message and the right exit code,
and `prepare` loses no valid row. Property-based tests cover the CSV reader's recovery."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chef_genius.cli import main
from chef_genius.recipe import Recipe
from chef_genius.sources import Rejected, open_source, read_rows
from tests.conftest import RECIPENLG

HEADER = ["title", "ingredients", "directions"]


def valid_rows(n: int, start: int = 0) -> list[list[str]]:
    with open(RECIPENLG, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[start:start + n]
    return [[r["title"], r["ingredients"], r["directions"]] for r in rows]


def csv_text(rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows([HEADER, *rows])
    return out.getvalue()


def prepare_cli(tmp_path, name: str, content: bytes | str, *extra: str) -> tuple[int, dict | None]:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    code = main(["prepare", str(path), "--out", str(tmp_path / "out"), "--quiet", "--workers", "0", *extra])
    report = tmp_path / "out" / "data_report.json"
    return code, json.loads(report.read_text()) if code == 0 else None


def test_truncated_csv_keeps_every_complete_row(tmp_path):
    text = csv_text(valid_rows(5))
    code, report = prepare_cli(tmp_path, "t.csv", text[: len(text) - 40])  # cut inside the last row
    assert code == 0 and report["kept"] == 4 and report["rejected_total"] == 1


def test_unbalanced_quote_loses_no_following_row(tmp_path):
    rows = valid_rows(6)
    lines = csv_text(rows).splitlines(keepends=True)
    lines.insert(3, '"Broken title,[""1 egg""],[""Mix.""]\n')  # opens a quoted field, never closes it
    code, report = prepare_cli(tmp_path, "q.csv", "".join(lines))
    assert code == 0 and report["kept"] == 6
    assert report["rejected"] == {"malformed_row": 1}


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_other_delimiters_are_detected(tmp_path, delimiter):
    code, report = prepare_cli(tmp_path, "d.csv", csv_text(valid_rows(4), delimiter))
    assert code == 0 and report["kept"] == 4


def test_byte_order_mark_and_crlf(tmp_path):
    text = csv_text(valid_rows(3)).replace("\n", "\r\n")
    code, report = prepare_cli(tmp_path, "bom.csv", b"\xef\xbb\xbf" + text.encode())
    assert code == 0 and report["kept"] == 3


def test_mixed_encodings_reject_only_the_latin1_rows(tmp_path):
    good = csv_text(valid_rows(4)).replace("Mix", "Mix à la main").encode("utf-8")  # UTF-8 text: a UTF-8 file
    latin = 'Crème brûlée,"[""2 cups cream""]","[""Bake.""]"\n'.encode("latin-1")
    code, report = prepare_cli(tmp_path, "mixed.csv", good + latin + good.split(b"\n", 1)[1].replace(b"1", b"2"))
    assert code == 0 and report["rejected"] == {"non_utf8": 1}
    assert report["kept"] + report["duplicates"]["exact"] + report["duplicates"]["near"] == 8
    assert report["files"][0]["encoding"] == "utf-8"


def test_a_latin1_file_is_read_as_cp1252(tmp_path):
    good = csv_text(valid_rows(4))
    assert good.isascii()
    latin = 'Crème brûlée – “classic”,"[""2 cups cream""]","[""Bake.""]"\n'.encode("cp1252")
    code, report = prepare_cli(tmp_path, "latin.csv", good.encode("ascii") + latin)
    assert code == 0 and report["rejected"] == {} and report["files"][0]["encoding"] == "cp1252"
    from chef_genius.dataset.collate import load_split

    titles = [t for split in ("train", "val", "test") for t in load_split(tmp_path / "out", split).titles]
    assert "Crème brûlée – “classic”" in titles


def test_ten_megabyte_line_is_rejected_and_the_rest_kept(tmp_path):
    rows = valid_rows(3)
    rows.insert(1, ["Huge", json.dumps(["x" * 10_000_000]), json.dumps(["Mix."])])
    code, report = prepare_cli(tmp_path, "huge.csv", csv_text(rows))
    assert code == 0 and report["kept"] == 3 and report["rejected"] == {"field_too_long": 1}


def test_cells_that_are_not_lists(tmp_path):
    objects = [{"title": "A", "ingredients": {"egg": 1}, "steps": ["Mix."]},
               {"title": "B", "ingredients": 5, "steps": ["Mix."]},
               {"title": "C", "ingredients": ["2 eggs"], "steps": "1. Beat the eggs. 2. Fry them."}]
    code, report = prepare_cli(tmp_path, "cells.json", json.dumps(objects))
    assert code == 0 and report["kept"] == 1 and report["rejected"] == {"unparseable_cell": 2}


@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", "", "is empty"),
    ("blank.json", "   \n", "is empty"),
    ("number.json", "42", "not a JSON list or object"),
    ("text.json", '"just a string"', "not a JSON list or object"),
    ("garbage.json", "[{,,}", "invalid JSON"),
    ("columns.csv", "name;stuff\n1;2\n", "lacks the needed columns"),
    ("binary.csv", bytes(range(256)) * 4, "lacks the needed columns"),
])
def test_unusable_files_exit_2_with_one_line(tmp_path, capsys, name, content, message):
    code, _ = prepare_cli(tmp_path, name, content)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_directory_given_as_a_file(tmp_path, capsys):
    assert main(["prepare", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "optim.epochs must be positive"),
    (["--batch-size", "-4"], "optim.batch_size must be positive"),
    (["--lora-r", "0"], "lora.r must be positive"),
    (["--max-tokens", "0"], "optim.max_tokens must be positive"),
    (["--augmentation-prob", "1.5"], "augmentation_prob must be in [0, 1]"),
    (["--label-smoothing", "1"], "label_smoothing must be in [0, 1)"),
    (["--set", "data.quality_start=-0.1"], "quality_start must be in [0, 1]"),
    (["--set", "optim.epochs=three"], "expected an integer"),
    (["--set", "nonsense.key=1"], "unknown key"),
    (["--preset", "gtx970"], "unknown 'gtx970'"),
    (["--eval-steps", "0"], "eval.eval_steps must be positive"),
])
def test_bad_configs_exit_2_with_one_line(capsys, flags, message):
    assert main(["train", *flags, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_yaml_file(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("optim: [unclosed\n")
    assert main(["train", "--config", str(path), "--print-config"]) == 2
    assert "invalid YAML" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--print-config"]) == 2


garbage_line = st.text(alphabet='abc ,;"[]\\\'x\t', min_size=1, max_size=40).map(lambda t: t.replace("\n", " "))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.tuples(st.integers(0, 8), garbage_line), max_size=4))
def test_valid_rows_survive_any_garbage_lines(tmp_path_factory, garbage):
    rows = valid_rows(8)
    lines = csv_text(rows).splitlines(keepends=True)
    for position, text in sorted(garbage, reverse=True):
        lines.insert(1 + position, text + "\n")
    path = tmp_path_factory.mktemp("g") / "g.csv"
    path.write_text("".join(lines), encoding="utf-8")
    read = [item for _, item in read_rows(open_source(path, progress=False))]
    titles = {r.title for r in read if isinstance(r, Recipe)}
    assert {Recipe(title=r[0]).title for r in rows} <= titles


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400))
def test_readers_never_crash_on_arbitrary_bytes(tmp_path_factory, content):
    from chef_genius.errors import UserError

    path = tmp_path_factory.mktemp("b") / "x.csv"
    path.write_bytes(b"title,ingredients,directions\n" + content)
    try:
        items = [item for _, item in read_rows(open_source(path, progress=False))]
    except UserError:
        return
    assert all(isinstance(item, (Recipe, Rejected)) for item in items)
