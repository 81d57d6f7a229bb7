"""Reading a table file (csv, tsv, jsonl, json, xlsx) into a DataFrame of strings, every data
row remembering where it starts in the file, so later errors can name the line or sheet row."""
import codecs
import csv
import io
import json
import math
import os

import pandas as pd

from xtune_keras.errors import XtuneError


TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".xlsx")


# ``read_table`` stores, per data row, where that row starts ("line 4", "sheet row 4"), so that
# errors raised later (empty text, empty label) can point into the file.
WHERE_ATTR = "xtune_where"


def read_table(path):
    """The file at ``path`` as a DataFrame of strings (lists stay lists in JSON), by extension."""
    extension = os.path.splitext(str(path))[1].lower()
    if extension not in SUPPORTED_EXTENSIONS:
        raise XtuneError(
            "%s: unknown file type %r; supported: %s"
            % (path, extension or "(none)", ", ".join(SUPPORTED_EXTENSIONS))
        )
    if not os.path.isfile(path):
        raise XtuneError("%s: file not found" % path)
    if extension == ".xlsx":
        columns, records, where = _read_xlsx(path)
    else:
        text = _read_utf8(path)
        if extension in TEXT_SEPARATORS:
            columns, records, where = _parse_delimited(path, text, TEXT_SEPARATORS[extension])
        elif extension == ".json" and text.lstrip().startswith("["):
            columns, records, where = _parse_json_array(path, text)
        else:
            columns, records, where = _parse_jsonl(path, text)
    if not records:
        raise XtuneError("%s: empty file (no rows)" % path)
    # object dtype: no NaN-for-missing int->float coercion, no "NA" -> NaN, lists kept as lists.
    table = pd.DataFrame(records, columns=columns, dtype=object)
    table.attrs[WHERE_ATTR] = where
    return table


def _read_utf8(path):
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise XtuneError("%s: empty file (no rows)" % path)
    # Decode ourselves rather than let pandas raise: the error must say where the bad byte is.
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = raw[:offset].count(b"\n") + 1
        raise XtuneError(
            "%s line %d (byte offset %d): not valid UTF-8 (byte 0x%02x); re-save the file as UTF-8"
            % (path, line, offset, raw[offset])
        )


def _parse_delimited(path, text, separator):
    # The csv module (not pandas) so that each row's first line is known, also with quoted
    # multi-line cells, and so that every cell stays the exact text of the file.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True)
    rows, starts, line = [], [], 0
    try:
        for row in reader:
            starts.append(line + 1)
            line = reader.line_num
            rows.append(row)
    except csv.Error as exc:
        # line + 1 is where the broken row starts (an unclosed quote is only noticed at the end).
        raise XtuneError(
            "%s line %d: malformed %s (%s); a field with quotes must be quoted whole, inner quotes doubled"
            % (path, line + 1, _kind(separator), exc)
        )
    numbered = [(start, row) for start, row in zip(starts, rows) if any(cell.strip() for cell in row)]
    if not numbered:
        raise XtuneError("%s: empty file (no rows)" % path)
    columns = _header(path, numbered[0][0], numbered[0][1])
    records, where = [], []
    for start, row in numbered[1:]:
        if len(row) != len(columns):
            raise XtuneError(
                "%s line %d: %d fields but the header has %d (a %s or quote out of place?)"
                % (path, start, len(row), len(columns), "comma" if separator == "," else "tab")
            )
        records.append(row)
        where.append("line %d" % start)
    return columns, records, where


def _kind(separator):
    return "CSV" if separator == "," else "TSV"


def _header(path, line, cells):
    columns = [str(cell).strip() for cell in cells]
    seen = set()
    for column in columns:
        if column in seen:
            raise XtuneError("%s line %d: duplicate column %r in the header" % (path, line, column))
        seen.add(column)
    return columns


def _parse_jsonl(path, text):
    records, where = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise XtuneError("%s line %d: not valid JSON (%s)" % (path, number, exc))
        if not isinstance(value, dict):
            raise XtuneError(
                "%s line %d: expected a JSON object per line, got %s" % (path, number, type(value).__name__)
            )
        records.append(value)
        where.append("line %d" % number)
    return _union_columns(records), records, where


def _parse_json_array(path, text):
    try:
        values = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise XtuneError("%s line %s: not valid JSON (%s)" % (path, line or "?", exc))
    for number, value in enumerate(values, start=1):
        if not isinstance(value, dict):
            raise XtuneError(
                "%s item %d: expected a list of JSON objects, got %s" % (path, number, type(value).__name__)
            )
    return _union_columns(values), values, [None] * len(values)


def _union_columns(records):
    # Keys may differ between objects; a key missing from one object is an empty cell there.
    return list(dict.fromkeys(key for record in records for key in record))


def _read_xlsx(path):
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError, ValueError... for broken files
        raise XtuneError("%s: not a readable .xlsx workbook (%s)" % (path, exc))
    try:
        sheet = workbook.worksheets[0]
        rows = [
            (number, list(values))
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1)
            if any(_cell_text(value) for value in values)
        ]
    finally:
        workbook.close()
    if not rows:
        raise XtuneError("%s: empty file (no rows)" % path)
    header_row, header = rows[0]
    columns = _header(path, header_row, [_cell_text(value) for value in header])
    records, where = [], []
    for number, values in rows[1:]:
        values = (values + [None] * len(columns))[: len(columns)]
        records.append(values)
        where.append("sheet row %d" % number)
    return columns, records, where


def _cell_text(value):
    """A cell as text: empty for missing cells, whole floats as integers (Excel stores 3 as 3.0)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()
