import json

import numpy as np
import openpyxl
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
from xtune_keras.data.tables import Examples, LabelVocab, load_examples, read_table, split_examples
from xtune_keras.errors import XtuneError

COLUMNS = ["title", "body", "addr", "label"]
ROWS = [
    ["路灯坏了", "小区路灯不亮", "北京路", "repair|light"],
    ["NA", "noise at night", "", "noise"],
    ["", "停电", "city road 3", "power"],
]


def write_text(path, rows, separator):
    lines = [separator.join(row) for row in [COLUMNS] + rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(dict(zip(COLUMNS, row)), ensure_ascii=False) + "\n")
    return str(path)


def write_xlsx(path, rows):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(COLUMNS)
    for row in rows:
        sheet.append([cell if cell != "" else None for cell in row])
    workbook.save(path)
    return str(path)


def write_any(tmp_path, name, rows=ROWS):
    path = tmp_path / name
    if name.endswith(".csv"):
        return write_text(path, rows, ",")
    if name.endswith((".tsv", ".txt")):
        return write_text(path, rows, "\t")
    if name.endswith((".jsonl", ".json")):
        return write_jsonl(path, rows)
    return write_xlsx(path, rows)


def load(path, **kwargs):
    options = dict(text1=["title", "body"], text2=["addr"], label="label")
    options.update(kwargs)
    return load_examples(path, **options)


def message(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.txt", "d.jsonl", "d.json", "d.xlsx"])
def test_every_format_gives_the_same_examples(tmp_path, name):
    examples = load(write_any(tmp_path, name))
    assert examples.text1 == ["路灯坏了 小区路灯不亮", "NA noise at night", "停电"]
    assert examples.text2 == ["北京路", "", "city road 3"]
    assert examples.labels == [["repair", "light"], ["noise"], ["power"]]
    assert examples.rows == [1, 2, 3]
    assert examples.source == str(tmp_path / name)
    assert len(examples) == 3


def test_json_list_of_objects(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([dict(zip(COLUMNS, row)) for row in ROWS], ensure_ascii=False), encoding="utf-8")
    assert load(str(path)).text1 == load(write_any(tmp_path, "d.csv")).text1


def test_read_table_keeps_na_text_and_strings(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,text\n007,NA\n2,\n", encoding="utf-8")
    table = read_table(str(path))
    assert list(table.columns) == ["id", "text"]
    assert table["id"].tolist() == ["007", "2"]
    assert table["text"].tolist() == ["NA", ""]


def test_utf8_bom_and_crlf_are_tolerated(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufefftitle,label\r\n你好,a\r\n".encode("utf-8"))
    examples = load_examples(str(path), text1=["title"], label="label")
    assert examples.text1 == ["你好"] and examples.labels == [["a"]]


def test_quoted_multiline_csv_cell(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('title,label\n"line one\nline two, with comma",a\nok,b\n', encoding="utf-8")
    examples = load_examples(str(path), text1="title", label="label")
    assert examples.text1 == ["line one line two, with comma", "ok"]


def test_fields_joined_skip_empty_cells_and_text2_optional(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,label\n  x  ,,y,l\n,z,,l\n", encoding="utf-8")
    examples = load_examples(str(path), text1=["a", "b", "c"], label="label")
    assert examples.text1 == ["x y", "z"]
    assert examples.text2 is None


def test_clean_patterns_remove_templates_and_collapse_whitespace(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n市民来电反映：路灯坏了  请处理。,a\n", encoding="utf-8")
    examples = load_examples(str(path), text1=["text"], label="label", clean_patterns=["市民来电反映：", "请处理。"])
    assert examples.text1 == ["路灯坏了"]


def test_prediction_without_labels(tmp_path):
    examples = load(write_any(tmp_path, "d.csv"), label=None)
    assert examples.labels is None


# --------------------------------------------------------------------------- labels in cells


def test_multi_label_from_list_json_string_and_delimited(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"t": "a", "y": ["x", "y"]},
        {"t": "b", "y": '["x", "z"]'},
        {"t": "c", "y": " y | x ||"},
        {"t": "d", "y": 3},
        {"t": "e", "y": "x|x"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    examples = load_examples(str(path), text1=["t"], label="y")
    assert examples.labels == [["x", "y"], ["x", "z"], ["y", "x"], ["3"], ["x"]]


def test_custom_label_separator(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("t,y\na,p;q\n", encoding="utf-8")
    assert load_examples(str(path), text1="t", label="y", label_sep=";").labels == [["p", "q"]]


def test_single_label_keeps_the_whole_cell(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("t,y\na,p|q\nb,3\n", encoding="utf-8")
    examples = load_examples(str(path), text1="t", label="y", multi_label=False)
    assert examples.labels == [["p|q"], ["3"]]


def test_xlsx_numbers_become_strings(tmp_path):
    path = str(tmp_path / "d.xlsx")
    workbook = openpyxl.Workbook()
    workbook.active.append(["t", "y"])
    workbook.active.append(["a", 3])
    workbook.active.append(["b", 4.0])
    workbook.save(path)
    assert load_examples(path, text1="t", label="y", multi_label=False).labels == [["3"], ["4"]]


def test_empty_labels_allowed_when_not_required(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("t,y\na,\nb,q\n", encoding="utf-8")
    examples = load_examples(str(path), text1="t", label="y", require_labels=False)
    assert examples.labels == [[], ["q"]]


# --------------------------------------------------------------------------- splitting


def numbered_examples(count):
    return Examples(
        text1=["t%d" % i for i in range(count)], text2=None,
        labels=[["l%d" % (i % 3)] for i in range(count)], source="s.csv", rows=list(range(1, count + 1)),
    )


def test_split_is_deterministic_disjoint_and_complete():
    examples = numbered_examples(50)
    train, valid = split_examples(examples, 0.2, seed=7)
    again_train, again_valid = split_examples(examples, 0.2, seed=7)
    assert (train.rows, valid.rows) == (again_train.rows, again_valid.rows)
    assert len(valid) == 10 and len(train) == 40
    assert not set(train.rows) & set(valid.rows)
    assert sorted(train.rows + valid.rows) == examples.rows
    assert train.text1 == ["t%d" % (row - 1) for row in train.rows]
    assert split_examples(examples, 0.2, seed=8)[1].rows != valid.rows


def test_split_keeps_both_parts_non_empty():
    train, valid = split_examples(numbered_examples(3), 0.01, seed=0)
    assert (len(train), len(valid)) == (2, 1)
    train, valid = split_examples(numbered_examples(3), 0.99, seed=0)
    assert (len(train), len(valid)) == (1, 2)


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.1, "0.2", None])
def test_split_ratio_must_be_between_zero_and_one(ratio):
    with pytest.raises(XtuneError) as excinfo:
        split_examples(numbered_examples(10), ratio, seed=0)
    assert "data.valid_ratio" in message(excinfo)


def test_subset_keeps_rows_and_text2():
    examples = Examples(["a", "b", "c"], ["x", "y", "z"], [["1"], ["2"], ["3"]], "s.csv", [1, 2, 3])
    part = examples.subset([2, 0])
    assert (part.text1, part.text2, part.labels, part.rows) == (["c", "a"], ["z", "x"], [["3"], ["1"]], [3, 1])


# --------------------------------------------------------------------------- LabelVocab


def test_label_vocab_encode_decode_round_trip(tmp_path):
    examples = Examples(["a", "b", "c"], None, [["y", "x"], [], ["z"]], "s.csv", [1, 2, 3])
    vocab = LabelVocab.from_label_lists(examples.labels, None, [["x"]])
    assert vocab.names == ["x", "y", "z"] and len(vocab) == 3
    targets = vocab.encode(examples)
    assert targets.dtype == np.float32
    assert targets.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert vocab.decode(targets) == [["x", "y"], [], ["z"]]
    assert vocab.decode([[0.6, 0.4, 0.9]], threshold=0.8) == [["z"]]
    assert vocab.decode([[0.6, 0.4, 0.9]], threshold=[0.5, 0.3, 0.95]) == [["x", "y"]]
    assert vocab.decode([[0.2, 0.5, 0.3]], multi_label=False) == [["y"]]

    assert vocab.to_json() == {"labels": ["x", "y", "z"]}
    assert LabelVocab.from_json(vocab.to_json()) == vocab
    assert LabelVocab.from_json(json.dumps(vocab.to_json())) == vocab
    path = str(tmp_path / "labels.json")
    vocab.save(path)
    assert json.load(open(path, encoding="utf-8")) == {"labels": ["x", "y", "z"]}
    assert LabelVocab.load(path) == vocab


def test_single_label_encodes_one_hot(tmp_path):
    examples = Examples(["a", "b"], None, [["2"], ["10"]], "s.csv", [1, 2])
    vocab = LabelVocab.from_label_lists(examples.labels)
    assert vocab.names == ["10", "2"]  # names sort as text
    assert vocab.encode(examples).tolist() == [[0, 1], [1, 0]]


def test_unknown_label_names_source_row_and_known_labels():
    vocab = LabelVocab(["a", "b", "c", "d", "e", "f"])
    examples = Examples(["t1", "t2"], None, [["a"], ["zz"]], "valid.csv", [4, 9])
    with pytest.raises(XtuneError) as excinfo:
        vocab.encode(examples)
    text = message(excinfo)
    assert text.startswith("valid.csv row 9: unknown label 'zz'")
    assert "the model knows 6 labels, e.g. a, b, c" in text


def test_label_file_errors(tmp_path):
    with pytest.raises(XtuneError, match="label file not found"):
        LabelVocab.load(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"names": ["a"]}', encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        LabelVocab.load(str(bad))
    assert str(bad) in message(excinfo) and '"labels"' in message(excinfo)
    with pytest.raises(XtuneError, match="duplicate label 'a'"):
        LabelVocab(["a", "a"])


# --------------------------------------------------------------------------- errors


def test_file_not_found(tmp_path):
    path = str(tmp_path / "missing.csv")
    with pytest.raises(XtuneError) as excinfo:
        read_table(path)
    assert message(excinfo) == "%s: file not found" % path


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"x")
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    text = message(excinfo)
    assert str(path) in text and ".parquet" in text
    for extension in (".csv", ".tsv", ".jsonl", ".json", ".xlsx"):
        assert extension in text


@pytest.mark.parametrize("name,content", [
    ("zero.csv", ""), ("header_only.csv", "title,label\n"), ("blank.tsv", "\n\n"),
    ("zero.jsonl", ""), ("blank.jsonl", "\n  \n"), ("empty_list.json", "[]"),
])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    assert message(excinfo) == "%s: empty file (no rows)" % path


def test_empty_xlsx(tmp_path):
    path = str(tmp_path / "empty.xlsx")
    workbook = openpyxl.Workbook()
    workbook.active.append(["title", "label"])
    workbook.save(path)
    with pytest.raises(XtuneError) as excinfo:
        read_table(path)
    assert message(excinfo) == "%s: empty file (no rows)" % path


def test_non_utf8_csv_names_line_and_byte(tmp_path):
    path = tmp_path / "gbk.csv"
    head = "title,label\nok,a\n".encode("utf-8")
    path.write_bytes(head + "中文数据,b\n".encode("gbk"))  # 0xd6 0xd0: invalid UTF-8 at once
    with pytest.raises(XtuneError) as excinfo:
        load_examples(str(path), text1="title", label="label")
    text = message(excinfo)
    assert str(path) in text
    assert "line 3" in text
    assert "byte offset %d" % len(head) in text
    assert "UTF-8" in text and "re-save" in text


def test_non_utf8_jsonl(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes('{"t": "ok"}\n'.encode("utf-8") + '{"t": "中文"}\n'.encode("gbk"))
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    assert "gbk.jsonl line 2 (byte offset 19)" in message(excinfo)


def test_malformed_csv_names_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("title,label\nok,a\ntoo,many,fields\n", encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    text = message(excinfo)
    assert text.startswith("%s line 3: 3 fields but the header has 2" % path)


def test_unclosed_quote_csv_names_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('title,label\nok,a\n"never closed,b\nmore\n', encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    assert message(excinfo).startswith("%s line 3: malformed CSV" % path)


def test_tsv_quotes_inside_text_are_kept(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('t\ty\n他说"好"吗\ta\n"quoted\ttab"\tb\n', encoding="utf-8")
    assert load_examples(str(path), text1="t", label="y").text1 == ['他说"好"吗', "quoted tab"]


def test_malformed_jsonl_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t": "a"}\n\n{"t": "b",}\n', encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    assert message(excinfo).startswith("%s line 3: not valid JSON" % path)
    path.write_text('{"t": "a"}\n["t"]\n', encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    assert message(excinfo).startswith("%s line 2: expected a JSON object" % path)


def test_malformed_json_array_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"t": "a"},\n{"t": }\n]', encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    assert message(excinfo).startswith("%s line 3: not valid JSON" % path)


def test_broken_xlsx(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"not a zip")
    with pytest.raises(XtuneError) as excinfo:
        read_table(str(path))
    assert str(path) in message(excinfo)


@pytest.mark.parametrize("key,kwargs", [
    ("data.text1", dict(text1=["title", "content"])),
    ("data.text2", dict(text2=["content"])),
    ("data.label", dict(label="content")),
])
def test_missing_column_names_columns_and_key(tmp_path, key, kwargs):
    path = write_any(tmp_path, "d.csv")
    with pytest.raises(XtuneError) as excinfo:
        load(path, **kwargs)
    text = message(excinfo)
    assert text.startswith("%s: missing column 'content' (columns: title, body, addr, label)" % path)
    assert key in text


def test_empty_text_row_names_row_line_and_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("title,body,label\nok,,a\n\n,,b\n", encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        load_examples(str(path), text1=["title", "body"], label="label")
    text = message(excinfo)
    assert text.startswith("%s row 2 (line 4): empty text" % path)
    assert "data.text1" in text and "title, body" in text


def test_text_empty_after_cleaning(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("t\ty\nok\ta\n来电反映\tb\n", encoding="utf-8")
    with pytest.raises(XtuneError, match=r"row 2 \(line 3\): empty text"):
        load_examples(str(path), text1="t", label="y", clean_patterns=["来电反映"])


def test_empty_label_names_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"t": "a", "y": "x"}\n{"t": "b", "y": " | "}\n', encoding="utf-8")
    with pytest.raises(XtuneError) as excinfo:
        load_examples(str(path), text1="t", label="y")
    assert message(excinfo).startswith("%s row 2 (line 2): empty label in column 'y' (data.label)" % path)


def test_empty_label_in_xlsx_names_sheet_row(tmp_path):
    path = str(tmp_path / "d.xlsx")
    workbook = openpyxl.Workbook()
    for row in (["t", "y"], ["a", "x"], [None, None], ["b", None]):
        workbook.active.append(row)
    workbook.save(path)
    with pytest.raises(XtuneError) as excinfo:
        load_examples(path, text1="t", label="y")
    assert message(excinfo).startswith("%s row 2 (sheet row 4): empty label" % path)


def test_several_labels_in_single_label_mode(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"t": "a", "y": ["p", "q"]}\n', encoding="utf-8")
    with pytest.raises(XtuneError, match="row 1 .*2 labels.*data.multi_label"):
        load_examples(str(path), text1="t", label="y", multi_label=False)


def test_bad_clean_pattern_names_key(tmp_path):
    with pytest.raises(XtuneError, match="data.clean_patterns"):
        load_examples(write_any(tmp_path, "d.csv"), text1="title", clean_patterns=["(unclosed"])
