"""Go (RE2) regular expressions translated for Python: what matches must not change."""

from __future__ import annotations

import pytest

from monitor.query.regex import compile_go_regex, expand_go_template, translate_go_regex

MATCHES = [
    pytest.param("((?i)PRO).*", "production", True, id="mid-pattern (?i) applies to its group"),
    pytest.param(
        "((?i)PRO).*", "PROduction", True, id="case-folded group still matches upper case"
    ),
    pytest.param("a((?i)b)c", "aBc", True, id="scoped flag covers the rest of the group"),
    pytest.param("a((?i)b)c", "aBC", False, id="scoped flag ends with its group"),
    pytest.param("a(?i)b|c", "C", True, id="flag survives alternation in the same group"),
    pytest.param("a(?i)b|c", "Ab", False, id="flag does not reach back before it"),
    pytest.param(".*", "line\nbreak", True, id="dot matches newline as in Prometheus"),
    pytest.param("a$", "a\n", False, id="dollar is end of text, not before a final newline"),
    pytest.param(r"\d+", "١٢", False, id="digits are ASCII only"),
    pytest.param(r"\w+", "é", False, id="word characters are ASCII only"),
    pytest.param(r"\s", "\u00a0", False, id="space class is ASCII only"),
    pytest.param("[[:alpha:]]+", "abcXYZ", True, id="POSIX class inside brackets"),
    pytest.param("[[:digit:]x]+", "1x2", True, id="POSIX class next to a literal"),
    pytest.param(r"\Qa.b\E", "a.b", True, id="quoted literal matches itself"),
    pytest.param(r"\Qa.b\E", "axb", False, id="quoted literal dot is not a wildcard"),
    pytest.param(r"\x{41}", "A", True, id="braced hex code point"),
    pytest.param("(?<n>x)y", "xy", True, id="Go named group spelling"),
    pytest.param("[a&&b]+", "a&b", True, id="ampersands in a class are plain characters"),
    pytest.param("[|~]+", "|~", True, id="pipe and tilde in a class are plain characters"),
    pytest.param(r"ab\z", "ab", True, id="end-of-text escape"),
    pytest.param("(?i:PRODUCTION)", "production", True, id="scoped flag group passes through"),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), MATCHES)
def test_translated_pattern_matches_like_go(pattern: str, text: str, expected: bool) -> None:
    assert (compile_go_regex(pattern).fullmatch(text) is not None) is expected


REFUSED = [
    pytest.param(r"\pL", id="Unicode class"),
    pytest.param(r"\p{Greek}", id="braced Unicode class"),
    pytest.param("(?U)a+", id="ungreedy flag"),
    pytest.param("[[:^alpha:]]", id="negated POSIX class"),
    pytest.param("[[:nope:]]", id="unknown POSIX class"),
    pytest.param("[abc", id="unterminated class"),
    pytest.param(r"(a)\1", id="backreference"),
]


@pytest.mark.parametrize("pattern", REFUSED)
def test_untranslatable_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        compile_go_regex(pattern)


def test_translation_wraps_in_dotall_group() -> None:
    assert translate_go_regex("a.b") == "(?s:a.b)"


TEMPLATES = [
    pytest.param("value-$1", "value-10", id="numbered group"),
    pytest.param("${1}x", "10x", id="braced group before a letter"),
    pytest.param("$1x", "", id="unbraced name runs on: group 1x does not exist"),
    pytest.param("$name", "10", id="named group"),
    pytest.param("$$1", "$1", id="doubled dollar is a literal dollar"),
    pytest.param("a$!", "a$!", id="malformed reference stays literal"),
    pytest.param("$0", "source-value-10", id="group zero is the whole match"),
    pytest.param("$9", "", id="missing group expands to nothing"),
]


@pytest.mark.parametrize(("template", "expected"), TEMPLATES)
def test_template_expands_like_go(template: str, expected: str) -> None:
    match = compile_go_regex("source-value-(?P<name>.*)").fullmatch("source-value-10")
    assert match is not None
    assert expand_go_template(template, match) == expected
