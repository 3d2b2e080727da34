"""prepare's readers on other encodings (UTF-8 with or without BOM, UTF-16, cp1252, forced with
--encoding), line endings (LF, CRLF, CR) and containers (.gz, .bz2, .xz, .zip); what cannot be
read is one line, without raw bytes."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import zipfile

import pytest

from chef_genius.cli import main
from chef_genius.recipe import Recipe
from chef_genius.sources import Rejected, open_source, open_sources, read_rows
from chef_genius.sources.streams import detect_encoding

RECIPES = [
    ("Crème brûlée – “classic”", ["2 cups cream", "½ cup sugar", "4 egg yolks"], ["Whisk.", "Bake at 150 °C."]),
    ("Soupe à l'oignon", ["4 onions", "1 l stock"], ["Brown the onions.", "Simmer."]),
    ("Plain toast", ["1 slice bread", "butter"], ["Toast the bread.", "Spread the butter."]),
]
EXPECTED = [(title, tuple(ingredients), tuple(steps)) for title, ingredients, steps in RECIPES]


def csv_text(newline: str = "\n") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(["title", "ingredients", "directions"])
    for title, ingredients, steps in RECIPES:
        writer.writerow([title, json.dumps(ingredients, ensure_ascii=False), json.dumps(steps, ensure_ascii=False)])
    return out.getvalue()


def json_text() -> str:
    return json.dumps([{"title": t, "ingredients": i, "steps": s} for t, i, s in RECIPES], ensure_ascii=False,
                      indent=1)


def jsonl_text(newline: str = "\n") -> str:
    return "".join(json.dumps({"title": t, "ingredients": i, "steps": s}, ensure_ascii=False) + newline
                   for t, i, s in RECIPES)


def recipes(path, **kwargs) -> list[tuple]:
    rows = [item for reader in open_sources(path, progress=False, **kwargs) for _, item in read_rows(reader)]
    assert all(isinstance(item, Recipe) for item in rows), rows
    return [(r.title, r.ingredients, r.steps) for r in rows]


ENCODINGS = [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
             ("cp1252", b"")]


@pytest.mark.parametrize("encoding, bom", ENCODINGS)
@pytest.mark.parametrize("name, text", [("r.csv", csv_text()), ("r.json", json_text()), ("r.jsonl", jsonl_text())])
def test_every_encoding_reads_the_same_recipes(tmp_path, encoding, bom, name, text):
    path = tmp_path / name
    path.write_bytes(bom + text.encode(encoding))
    assert recipes(path) == EXPECTED
    assert open_source(path).encoding == {"utf-8": "utf-8-sig" if bom else "utf-8", "utf-16-le": "utf-16",
                                          "utf-16-be": "utf-16", "cp1252": "cp1252"}[encoding]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("name, make", [("r.csv", csv_text), ("r.jsonl", jsonl_text)])
def test_every_line_ending_reads_the_same_recipes(tmp_path, newline, name, make):
    path = tmp_path / name
    path.write_bytes(make(newline).encode("utf-8"))
    assert recipes(path) == EXPECTED
    path.write_bytes(make(newline).encode("cp1252"))
    assert recipes(path) == EXPECTED


def test_multi_line_cells_keep_their_line_endings_apart_from_rows(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_bytes(b'title,ingredients,steps\r"Toast","bread\rbutter","Toast.\rSpread."\r')
    assert recipes(path) == [("Toast", ("bread", "butter"), ("Toast.", "Spread."))]


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress),
                                              (".xz", lzma.compress)])
@pytest.mark.parametrize("name, text", [("r.csv", csv_text()), ("r.json", json_text()), ("r.jsonl", jsonl_text())])
def test_compressed_files_are_read_as_streams(tmp_path, suffix, compress, name, text):
    path = tmp_path / (name + suffix)
    path.write_bytes(compress(text.encode("cp1252" if suffix == ".xz" else "utf-8")))
    assert recipes(path) == EXPECTED


def test_a_zip_gives_one_source_per_recipe_file(tmp_path, capsys):
    path = tmp_path / "recipes.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/r.csv", csv_text().encode("utf-8"))
        archive.writestr("b.json", json_text().encode("utf-16"))
        archive.writestr("__MACOSX/._r.csv", b"\x00\x05\x16\x07")
        archive.writestr("a/", b"")
    assert recipes(path) == EXPECTED + EXPECTED
    assert main(["prepare", str(path), "--out", str(tmp_path / "out"), "--quiet", "--workers", "0"]) == 0
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert [(f["path"], f["format"], f["encoding"]) for f in report["files"]] == [
        (f"{path}:a/r.csv", "csv", "utf-8"), (f"{path}:b.json", "json", "utf-16")]
    assert report["kept"] == 3 and report["duplicates"]["exact"] == 3


def test_encoding_is_forced_with_the_flag(tmp_path, capsys):
    path = tmp_path / "latin.csv"
    path.write_bytes(csv_text().encode("cp1252"))
    rows = [item for _, item in read_rows(open_source(path, encoding="utf-8"))]
    assert [r.reason if isinstance(r, Rejected) else "ok" for r in rows] == ["non_utf8", "non_utf8", "ok"]
    utf8 = tmp_path / "utf8.csv"
    utf8.write_bytes(csv_text().encode("utf-8"))
    with pytest.warns(UserWarning, match="mostly valid UTF-8"):  # mojibake ahead: said, then done as asked
        misread = [item for _, item in read_rows(open_source(utf8, encoding="cp1252"))]
    assert misread[0].reason == "non_utf8"  # U+201D is E2 80 9D in UTF-8, and 9D is no cp1252 character
    assert misread[1].title.startswith("Soupe Ã")
    assert main(["prepare", str(path), "--out", str(tmp_path / "out"), "--quiet", "--workers", "0",
                 "--encoding", "latin-1"]) == 0
    assert main(["prepare", str(path), "--out", str(tmp_path / "o2"), "--encoding", "klingon"]) == 2
    err = capsys.readouterr().err
    assert "--encoding: unknown encoding 'klingon'" in err and err.count("\n") == 1


def test_detection():
    assert detect_encoding(b"plain ascii") == "utf-8"
    assert detect_encoding("caf\u00e9".encode()) == "utf-8"
    assert detect_encoding("caf\u00e9".encode()[:-1], whole=False) == "utf-8"  # a character cut by the sample's end
    assert detect_encoding("caf\u00e9".encode("cp1252")) == "cp1252"
    assert detect_encoding("caf\u00e9 ".encode() + "caf\u00e9".encode("cp1252")) == "utf-8"  # mixed: UTF-8


@pytest.mark.parametrize("name, content, message", [
    ("r.csv.gz", b"title,ingredients,directions\n", "is not a gzip file, or its data is damaged"),
    ("r.csv.bz2", b"\x00\xff" * 40, "is not a bz2 file, or its data is damaged"),
    ("r.csv.xz", b"\xfd7zXZ\x00garbage" * 4, "is not a xz file, or its data is damaged"),
    ("r.zip", b"PK\x03\x04 not really a zip", "is not a zip file, or is damaged"),
    ("r.csv.gz", gzip.compress(b"title,ingredients,directions\n")[:10], "ends early (a truncated file)"),
    ("r.csv", "title,ingredients,directions\n".encode("utf-16")[:-1], "lacks the needed columns"),
])
def test_what_cannot_be_read_is_one_line_without_raw_bytes(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["prepare", str(path), "--out", str(tmp_path / "out"), "--quiet", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert "b'" not in err and "\\x" not in err and "0x" not in err


def test_a_stream_that_breaks_mid_file_keeps_the_rows_before(tmp_path, capsys):
    rows = csv_text() + "".join(f'Dish {i},"[""{i} eggs""]","[""Beat the eggs {i} times.""]"\n' for i in range(3000))
    data = gzip.compress(rows.encode("utf-8"))
    path = tmp_path / "r.csv.gz"
    path.write_bytes(data[: len(data) * 3 // 4])
    assert main(["prepare", str(path), "--out", str(tmp_path / "out"), "--quiet", "--workers", "0"]) == 0
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["kept"] > 1000 and report["rejected"] == {"unreadable": 1}
    (reject,) = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert reject["detail"] == "the gzip stream ends early (a truncated file); the rest of the file is unreadable"


def _accented_csv(path, encoding: str):
    rows = [["title", "ingredients", "directions"]] + [
        [f"Crème brûlée {i}", json.dumps(["2 œufs", "100 g de crème fraîche", "½ gousse de vanille"]),
         json.dumps(["Fouetter les œufs.", "Cuire au bain-marie à 150 °C."])] for i in range(6)]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def test_forcing_an_encoding_on_utf8_text_warns_in_one_line(tmp_path, capsys):
    utf8 = _accented_csv(tmp_path / "utf8.csv", "utf-8")
    assert main(["prepare", str(utf8), "--out", str(tmp_path / "forced"), "--encoding", "cp1252", "--workers", "0",
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err == (f"chef-genius: warning: {utf8}: --encoding cp1252 read on text that is mostly valid UTF-8: its "
                   "accented letters will come out garbled (mojibake); leave --encoding out to detect the encoding "
                   "per file\n")
    # detected, or forced to what the file really is: no warning
    cp1252 = _accented_csv(tmp_path / "cp1252.csv", "cp1252")
    for source, forced in ((utf8, []), (cp1252, ["--encoding", "cp1252"]), (utf8, ["--encoding", "utf-8"])):
        out = tmp_path / f"out-{source.stem}-{len(forced)}-{forced[-1] if forced else ''}"
        assert main(["prepare", str(source), "--out", str(out), "--workers", "0", "--quiet", *forced]) == 0
        assert capsys.readouterr().err == ""


def test_mostly_utf8_counts_the_lines_with_non_ascii_bytes():
    from chef_genius.sources.streams import mostly_utf8

    assert mostly_utf8("crème\nplain\nbrûlée\n".encode())
    assert not mostly_utf8(b"plain ascii only\n")
    assert not mostly_utf8("crème\nbrûlée\nœuf\n".encode("cp1252", "replace"))
    assert not mostly_utf8("crème\n".encode() + "brûlée\nsoufflé\n".encode("cp1252"))  # 1 of 3 lines
    assert mostly_utf8("crème\nbrûlée\n".encode() + "soufflé".encode()[:-1], whole=False)  # a cut last line
