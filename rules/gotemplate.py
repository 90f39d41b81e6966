"""Go ``text/template`` spellings in alert templates, translated into Jinja2 source.

Prometheus rule packs write annotations as Go templates: ``{{ $labels.instance }}``,
``{{ $value | humanize }}``, ``{{ humanize $value }}``, ``{{ printf "%.2f" $value }}``,
``{{ .Labels.job }}``, ``{{ if gt $value 1.0 }}...{{ else }}...{{ end }}``,
``{{ range $k, $v := $labels }}``, ``{{ with ... }}`` and ``{{/* comments */}}``.
:func:`translate` rewrites every ``{{ ... }}`` action that is Go (it uses a
``$variable``, a ``.Field``, a keyword, or calls a function with arguments) into
the equivalent Jinja2, and leaves every other action, and all ``{% %}`` and
``{# #}`` blocks, as Jinja2. Go functions are called as ``_go_<name>`` globals, with
the piped value as the last argument as in Go; ``$name`` becomes the Jinja name
``name`` and dot becomes ``_dot`` (``$`` alone is ``_root``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

__all__ = ["GoTemplateError", "Translation", "jinja_name", "translate"]

_KEYWORDS = frozenset(
    ["if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"]
)
# Names a Go variable cannot keep in Jinja, where they are keywords or special.
_JINJA_RESERVED = frozenset(
    "and or not in is if else true false none True False None".split()
    + "loop self varargs kwargs caller".split()
)

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?))
  | (?P<variable>\$[A-Za-z0-9_]*)
  | (?P<field>\.[A-Za-z_][A-Za-z0-9_]*)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<punct>[()|,])
    """,
    re.VERBOSE,
)


class GoTemplateError(Exception):
    """A Go template action that cannot be translated; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass
class Translation:
    """The Jinja2 source of a template and the Go spelling of each name it introduced."""

    source: str
    names: dict[str, str] = field(default_factory=dict)


def jinja_name(variable: str) -> str:
    """The Jinja2 name of a Go variable (``$labels`` -> ``labels``, ``$`` -> ``_root``)."""
    bare = variable[1:]
    if not bare:
        return "_root"
    return f"_v_{bare}" if bare in _JINJA_RESERVED else bare


@dataclass
class _Token:
    kind: str
    text: str


def _tokenize(body: str) -> list[_Token] | None:
    """Go action tokens (spaces kept, since Go separates operands by them), or None."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(body):
        match = _TOKEN_RE.match(body, pos)
        if match is None or match.end() == pos:
            return None
        kind = match.lastgroup
        assert kind is not None
        text = match.group()
        if kind == "number" and text in ("+", "-"):
            return None
        tokens.append(_Token(kind, text))
        pos = match.end()
    return tokens


class _Parser:
    """A recursive-descent parser of one Go pipeline, emitting a Jinja2 expression."""

    def __init__(self, tokens: list[_Token], names: dict[str, str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.names = names
        self.goish = False

    def peek(self, skip_space: bool = True) -> _Token | None:
        pos = self.pos
        while skip_space and pos < len(self.tokens) and self.tokens[pos].kind == "space":
            pos += 1
        return self.tokens[pos] if pos < len(self.tokens) else None

    def next(self) -> _Token:
        token = self.peek()
        if token is None:
            raise GoTemplateError("unexpected end of action")
        self.pos = self.tokens.index(token, self.pos) + 1
        return token

    def at_end(self) -> bool:
        return self.peek() is None

    def variable(self, text: str) -> str:
        self.goish = True
        name = jinja_name(text)
        self.names.setdefault(name, text)
        return name

    def declaration(self) -> list[str] | None:
        """``$x :=``, ``$x =`` or ``$k, $v :=`` at the start of a pipeline, if there is one."""
        start = self.pos
        found: list[str] = []
        while True:
            token = self.peek()
            if token is None or token.kind != "variable":
                break
            self.next()
            found.append(token.text)
            after = self.peek()
            if after is not None and after.text == ",":
                self.next()
                continue
            if after is not None and after.kind in ("declare", "assign"):
                self.next()
                self.goish = True
                return [self.variable(v) for v in found]
            break
        self.pos = start
        return None

    def pipeline(self) -> str:
        value = self.command(None)
        while True:
            token = self.peek()
            if token is None or token.text != "|":
                return value
            self.next()
            value = self.command(value)

    def command(self, piped: str | None) -> str:
        operands: list[tuple[str, bool]] = [self.operand()]
        while True:
            if self.pos < len(self.tokens) and self.tokens[self.pos].kind == "space":
                token = self.peek()
                if token is None or token.text in ("|", ")"):
                    break
                operands.append(self.operand())
                continue
            token = self.peek(skip_space=False)
            if token is None or token.text in ("|", ")"):
                break
            raise GoTemplateError(f"unexpected {token.text!r} in operand")
        first, is_function = operands[0]
        args = [text for text, _ in operands[1:]]
        if len(args) > 0 or (piped is not None and args == []):
            self.goish = self.goish or len(args) > 0
        if is_function:
            if piped is not None:
                args.append(piped)
            return f"{first}({', '.join(args)})"
        if args or piped is not None:
            raise GoTemplateError("can't give argument to non-function")
        return first

    def operand(self) -> tuple[str, bool]:
        """One operand: its Jinja text and whether it is a function still to be called."""
        token = self.next()
        kind, text = token.kind, token.text
        is_function = False
        if kind == "string":
            value = ast.literal_eval(text)
            out = repr(value)
        elif kind == "raw":
            out = repr(text[1:-1])
        elif kind == "char":
            out = repr(ord(ast.literal_eval(text)))
        elif kind == "number":
            out = _number(text)
        elif kind == "variable":
            out = self.variable(text)
        elif kind == "dot":
            self.goish = True
            out = "_dot"
        elif kind == "field":
            self.goish = True
            out = f"_dot[{text[1:]!r}]"
        elif kind == "ident":
            if text in ("true", "false"):
                out = text
            elif text == "nil":
                out = "none"
            elif text in _KEYWORDS:
                raise GoTemplateError(f"unexpected keyword {text!r} in operand")
            else:
                out, is_function = f"_go_{text}", True
        elif text == "(":
            inner = self.pipeline()
            closing = self.next()
            if closing.text != ")":
                raise GoTemplateError("unclosed left paren")
            out = f"({inner})"
        else:
            raise GoTemplateError(f"unexpected {text!r} in operand")
        # A field chain directly after the term: .Labels.instance, $labels.job, (x).Value
        while self.pos < len(self.tokens) and self.tokens[self.pos].kind == "field":
            name = self.tokens[self.pos].text[1:]
            self.pos += 1
            if is_function:
                out, is_function = f"{out}()", False
            out = f"{out}[{name!r}]"
        return out, is_function


def _number(text: str) -> str:
    clean = text.replace("_", "")
    try:
        return repr(int(clean, 0))
    except ValueError:
        pass
    try:
        return repr(float(clean))
    except ValueError:
        raise GoTemplateError(f"bad number syntax: {text!r}") from None


@dataclass
class _Block:
    kind: str  # "if", "range", "with"
    temp: str = ""
    has_else: bool = False


class _Translator:
    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.stack: list[_Block] = []
        self.temps = 0

    def expression(self, tokens: list[_Token]) -> tuple[str, bool]:
        parser = _Parser(tokens, self.names)
        out = parser.pipeline()
        if not parser.at_end():
            raise GoTemplateError(f"unexpected {parser.next().text!r} in command")
        return out, parser.goish

    def pipeline_tokens(self, tokens: list[_Token]) -> str:
        if not any(t.kind != "space" for t in tokens):
            raise GoTemplateError("missing value for command")
        return self.expression(tokens)[0]

    def action(self, tokens: list[_Token]) -> tuple[list[str], str] | None:
        """Jinja statements (or one expression) for a Go action; None if it is not Go."""
        words = [t for t in tokens if t.kind != "space"]
        if not words:
            return None
        head = words[0]
        rest = tokens[tokens.index(head) + 1 :]
        spaced = not rest or rest[0].kind == "space"  # range(3) is Jinja's range
        if head.kind == "ident" and head.text in _KEYWORDS and spaced:
            return self.keyword(head.text, rest), "statement"
        parser = _Parser(tokens, self.names)
        declared = parser.declaration()
        try:
            out = parser.pipeline()
        except GoTemplateError:
            if parser.goish or declared is not None:
                raise
            return None
        if not parser.at_end():
            if parser.goish or declared is not None:
                raise GoTemplateError(f"unexpected {parser.next().text!r} in command")
            return None
        if declared is not None:
            if len(declared) != 1:
                raise GoTemplateError("too many declarations in command")
            return [f"set {declared[0]} = {out}"], "statement"
        if not parser.goish:
            return None
        return [out], "expression"

    def keyword(self, word: str, rest: list[_Token]) -> list[str]:
        if word == "if":
            self.stack.append(_Block("if"))
            return [f"if {self.pipeline_tokens(rest)}"]
        if word == "else":
            return self.else_(rest)
        if word == "end":
            if any(t.kind != "space" for t in rest):
                raise GoTemplateError("unexpected tokens after end")
            if not self.stack:
                raise GoTemplateError("unexpected {{end}}")
            block = self.stack.pop()
            if block.kind == "if":
                return ["endif"]
            if block.kind == "range":
                return ["endfor"]
            return ["endif", "endwith"] if block.has_else else ["endwith", "endif", "endwith"]
        if word == "range":
            return self.range_(rest)
        if word == "with":
            self.temps += 1
            temp = f"_with{self.temps}"
            self.stack.append(_Block("with", temp))
            value = self.pipeline_tokens(rest)
            return [f"with {temp} = {value}", f"if {temp}", f"with _dot = {temp}"]
        if word in ("break", "continue"):
            if not any(b.kind == "range" for b in self.stack):
                raise GoTemplateError(f"{{{{{word}}}}} outside {{{{range}}}}")
            return [word]
        raise GoTemplateError(f"{{{{{word}}}}} is not supported in alert templates")

    def else_(self, rest: list[_Token]) -> list[str]:
        if not self.stack:
            raise GoTemplateError("unexpected {{else}}")
        block = self.stack[-1]
        words = [t for t in rest if t.kind != "space"]
        if words and words[0].kind == "ident" and words[0].text == "if":
            if block.kind != "if":
                raise GoTemplateError("{{else if}} is only supported after {{if}}")
            after = rest[rest.index(words[0]) + 1 :]
            return [f"elif {self.pipeline_tokens(after)}"]
        if words:
            raise GoTemplateError("unexpected tokens after else")
        if block.has_else:
            raise GoTemplateError("{{else}} twice in one block")
        block.has_else = True
        if block.kind == "with":
            return ["endwith", "else"]
        return ["else"]

    def range_(self, rest: list[_Token]) -> list[str]:
        parser = _Parser(rest, self.names)
        declared = parser.declaration()
        if not any(t.kind != "space" for t in rest[parser.pos :]):
            raise GoTemplateError("missing value for range")
        value = parser.pipeline()
        if not parser.at_end():
            raise GoTemplateError(f"unexpected {parser.next().text!r} in range")
        self.stack.append(_Block("range"))
        if declared is None:
            return [f"for _dot in _go_range_values({value})"]
        if len(declared) == 1:
            return [f"for {declared[0]} in _go_range_values({value})", f"set _dot = {declared[0]}"]
        if len(declared) == 2:
            key, elem = declared
            return [f"for {key}, {elem} in _go_range_items({value})", f"set _dot = {elem}"]
        raise GoTemplateError("too many declarations in range")


def _find_close(text: str, start: int, close: str) -> int:
    """Index of ``close`` after ``start``, skipping quoted strings; -1 if unclosed."""
    pos = start
    while pos < len(text):
        if text.startswith(close, pos):
            return pos
        char = text[pos]
        if char in "\"'`":
            end = pos + 1
            while end < len(text) and text[end] != char:
                if text[end] == "\\" and char != "`":
                    end += 1
                if text[end] == "\n" and char != "`":
                    break
                end += 1
            if end < len(text) and text[end] == char:
                pos = end + 1
                continue
        pos += 1
    return -1


def translate(text: str) -> Translation:
    """The Jinja2 source for ``text``; raise GoTemplateError for a Go action that is wrong."""
    translator = _Translator()
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("{", pos)
        while start != -1 and text[start + 1 : start + 2] not in ("{", "%", "#"):
            start = text.find("{", start + 1)
        if start == -1:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        opener = text[start : start + 2]
        closer = {"{{": "}}", "{%": "%}", "{#": "#}"}[opener]
        if opener == "{#":
            end = text.find(closer, start + 2)
        else:
            end = _find_close(text, start + 2, closer)
        if end == -1:
            raise GoTemplateError(f"unclosed action {opener!r}")
        whole = text[start : end + 2]
        pos = end + 2
        if opener != "{{":
            out.append(whole)
            continue
        out.append(_action(translator, whole[2:-2]))
    if translator.stack:
        raise GoTemplateError(
            f"unexpected EOF: {{{{{translator.stack[-1].kind}}}}} has no {{{{end}}}}"
        )
    return Translation("".join(out), translator.names)


def _action(translator: _Translator, body: str) -> str:
    ltrim = len(body) > 1 and body[0] == "-" and body[1].isspace()
    rtrim = len(body) > 1 and body[-1] == "-" and body[-2].isspace()
    inner = body[1 if ltrim else 0 : len(body) - 1 if rtrim else len(body)]
    lines = "\n" * body.count("\n")  # keep line numbers of what follows
    left, right = ("-" if ltrim else ""), ("-" if rtrim else "")
    stripped = inner.strip()
    if stripped.startswith("/*"):
        if not stripped.endswith("*/"):
            raise GoTemplateError("unclosed comment")
        return f"{{#{left} {lines} {right}#}}"
    tokens = _tokenize(inner)
    result = translator.action(tokens) if tokens is not None else None
    if result is None:
        if tokens is None and "$" in inner:
            return "{{" + _dollars(body, translator) + "}}"
        return "{{" + body + "}}"
    parts, kind = result
    if kind == "expression":
        return f"{{{{{left} {parts[0]} {lines}{right}}}}}"
    tags = [f"{{% {part} %}}" for part in parts]
    tags[0] = f"{{%{left} " + tags[0][3:]
    tags[-1] = tags[-1][:-3] + f" {lines}{right}%}}"
    return "".join(tags)


_DOLLAR_RE = re.compile(r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|\$([A-Za-z_][A-Za-z0-9_]*)?""")


def _dollars(body: str, translator: _Translator) -> str:
    """Rename ``$name`` outside strings in a Jinja2 action (``{{ $value * 100 }}``)."""

    def rename(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(1)
        variable = match.group(0)
        name = jinja_name(variable)
        translator.names.setdefault(name, variable)
        return name

    return _DOLLAR_RE.sub(rename, body)
