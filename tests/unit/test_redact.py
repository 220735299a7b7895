"""The redactor masks every spelling of a secret and never touches structure."""

from __future__ import annotations

import json

import pytest

from migrategate import redact


@pytest.fixture(autouse=True)
def _fresh():
    redact.clear()
    yield
    redact.clear()


def test_json_escaped_and_repr_escaped_spellings_are_masked():
    secret = 'Qx"y\\z\u00fc-long'
    redact.register_secret(secret)
    for text in (json.dumps({"m": secret}), repr({"p": secret}), repr(secret.encode())):
        assert redact.redact(text).count("***") >= 1
        assert "Qx" not in redact.redact(text)


def test_the_spelling_sqlalchemy_renders_is_masked():
    redact.register_secret("blue sky/42")
    assert redact.redact("postgresql://u:blue sky%2F42@h/db") == "postgresql://u:***@h/db"


def test_a_password_cut_short_by_the_server_error_context_is_masked():
    redact.register_secret("p@ss:w/rd%41?#&=+")
    line = "LINE 1: SELECT 'p@ss:w/r... AS pad_1 ...#&=+' AS b FROM nowhere"
    assert "p@ss" not in redact.redact(line) and "#&=+" not in redact.redact(line)


def test_keys_and_structure_are_never_touched():
    redact.register_secret("null")
    redact.register_secret("e")
    doc = {"outcome": "verified", "message": "e is null here", "failed_revision": None}
    out = redact.redact_value(doc)
    assert list(out) == list(doc)  # keys intact
    assert out["failed_revision"] is None
    assert out["message"] == "*** is *** here"  # a short secret only as a whole token
    assert json.loads(json.dumps(out)) == out


def test_whitespace_only_secrets_are_not_masked_everywhere():
    redact.register_secret("  ")
    assert redact.redact("a  b") == "a  b"


def test_the_sql_escaped_spelling_is_masked():
    redact.register_secret("it's-a-secret")
    assert "it''s-a-secret" in redact.spellings("it's-a-secret")
    line = "syntax error at or near \"FROM\": SELECT 'it''s-a-secret' FROM"
    assert redact.redact(line) == "syntax error at or near \"FROM\": SELECT '***' FROM"


def test_a_secret_with_a_newline_is_masked_in_the_text_it_spans():
    redact.register_secret("first-half\nsecond-half")
    assert redact.redact("[SQL: SELECT 'first-half\nsecond-half' AS a]") \
        == "[SQL: SELECT '***' AS a]"


def test_each_line_of_a_multi_line_secret_is_a_spelling():
    """PostgreSQL's "LINE 2: ..." context shows one line of the statement."""
    redact.register_secret("first-half\nsecond-half")
    assert redact.redact("LINE 2: second-half' AS a") == "LINE 2: ***' AS a"


def test_a_sql_literal_quoted_in_python_source_is_masked():
    # --debug prints a failing revision's source line; its SQL holds the password as an
    # SQL literal ('' doubled) inside a Python literal (' escaped) — found by
    # tests/integration/test_secret_spellings.py with the password 0'"
    secret = "0'\"-longer"
    redact.register_secret(secret)
    source = "    op.execute(sa.text(%r))" % f"SELECT '{secret.replace(chr(39), chr(39) * 2)}' AS a"
    assert "\\'\\'" in source  # the literal's quotes, escaped by the Python literal
    assert redact.redact(source) == "    op.execute(sa.text('SELECT \\'***\\' AS a'))"


def test_a_mask_is_never_masked_again():
    """Hypothesis found it: the password '00\\r*' has a line that is just '*', and masking
    that spelling after the whole one turned the mask into nine stars."""
    redact.clear()
    redact.register_secret("00\r*")
    assert redact.redact("boom 00\r* boom") == "boom *** boom"
