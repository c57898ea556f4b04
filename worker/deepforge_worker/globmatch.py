"""``minimatch(path, pattern)`` as the WebGME executor worker calls it, so ``resultPatterns`` select the same files.

The Node worker (webgme-executor-worker 3.1.1) matches every file of the job directory, as a ``/``-separated
path relative to it, against each ``resultPatterns`` entry with minimatch 3.0.3 and default options.  A
bundle written for that worker must archive the same files under ours, so this is a port of minimatch's
algorithm rather than :mod:`fnmatch` (which lets ``*`` cross ``/`` and matches dotfiles):

* ``!`` prefixes negate, ``#`` starts a comment (matches nothing), ``{a,b}`` / ``{1..3}`` expand first;
* each ``/``-separated part is ``**`` (any number of parts, never a part starting with ``.``) or a part
  pattern with ``*``, ``?``, ``[...]``, extglobs ``@(a|b)`` ``+()`` ``*()`` ``?()`` ``!()`` and ``\\`` escapes;
* wildcards never match a leading ``.`` unless the part pattern starts with ``.`` (minimatch ``dot: false``).

``tests/unit/test_worker_globmatch.py`` pins the behaviour to a table produced by the real minimatch 3.0.3.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["brace_expand", "minimatch"]

_GLOBSTAR = object()
_QMARK = "[^/]"
_STAR = _QMARK + "*?"
_RE_SPECIALS = set("().*{}+?[]^$\\!")
_PL_TYPES = {
    "!": ("(?:(?!(?:", "))[^/]*?)"),
    "?": ("(?:", ")?"),
    "+": ("(?:", ")+"),
    "*": ("(?:", ")*"),
    "@": ("(?:", ")"),
}
_MAX_EXPANSIONS = 10_000
_NUMERIC_SEQ = re.compile(r"^-?\d+\.\.-?\d+(?:\.\.-?\d+)?$")
_ALPHA_SEQ = re.compile(r"^[a-zA-Z]\.\.[a-zA-Z](?:\.\.-?\d+)?$")


@dataclass
class _PatternList:
    """An open extglob group while parsing: where it starts in the regex and how it closes."""

    type: str
    re_start: int
    open: str
    close: str
    re_end: int = -1


def minimatch(path: str, pattern: str) -> bool:
    """Whether ``path`` (``/``-separated, relative) matches ``pattern`` with minimatch's default options."""
    return _compile(pattern)(path)


# --- brace expansion (the brace-expansion package minimatch uses) ---------------------------------------------


def _balanced(s: str) -> tuple[int, int] | None:
    """Positions of the first balanced ``{...}`` pair, as balanced-match's ``range`` finds it."""
    ai = s.find("{")
    bi = s.find("}", ai + 1)
    if ai < 0 or bi <= 0:
        return None
    begs: list[int] = []
    left, right = len(s), -1
    i = ai
    result: tuple[int, int] | None = None
    while i >= 0 and result is None:
        if i == ai:
            begs.append(i)
            ai = s.find("{", i + 1)
        elif len(begs) == 1:
            result = (begs.pop(), bi)
        else:
            beg = begs.pop()
            if beg < left:
                left, right = beg, bi
            bi = s.find("}", i + 1)
        i = ai if (ai < bi and ai >= 0) else bi
    if result is None and begs and right >= 0:
        result = (left, right)
    return result


def _comma_parts(body: str) -> list[str]:
    """``body.split(",")`` that keeps nested ``{...}`` groups whole."""
    span = _balanced(body)
    if span is None:
        return body.split(",")
    pre, inner, post = body[: span[0]], body[span[0] + 1 : span[1]], body[span[1] + 1 :]
    parts = pre.split(",")
    parts[-1] += "{" + inner + "}"
    if post:
        rest = _comma_parts(post)
        parts[-1] += rest[0]
        parts.extend(rest[1:])
    return parts


def _sequence(body: str, alpha: bool) -> list[str]:
    bits = body.split("..")

    def num(v: str) -> int:
        try:
            return int(v)
        except ValueError:
            return ord(v[0])

    x, y = num(bits[0]), num(bits[1])
    width = max(len(bits[0]), len(bits[1]))
    incr = max(abs(num(bits[2])), 1) if len(bits) == 3 else 1
    step = -incr if y < x else incr
    pad = any(re.match(r"^-?0\d", b) for b in bits)
    out: list[str] = []
    i = x
    while (i <= y if step > 0 else i >= y) and len(out) < _MAX_EXPANSIONS:
        if alpha:
            c = chr(i)
            out.append("" if c == "\\" else c)
        else:
            c = str(i)
            if pad and len(c) < width:
                zeros = "0" * (width - len(c))
                c = "-" + zeros + c[1:] if i < 0 else zeros + c
            out.append(c)
        i += step
    return out


def _expand(s: str, is_top: bool) -> list[str]:
    span = _balanced(s)
    if span is None or s[: span[0]].endswith("$"):
        return [s]
    pre, body, post_s = s[: span[0]], s[span[0] + 1 : span[1]], s[span[1] + 1 :]
    is_seq = bool(_NUMERIC_SEQ.match(body) or _ALPHA_SEQ.match(body))
    if not is_seq and "," not in body:
        return [s] if not re.search(r",.*\}", post_s) else _expand(pre + "{" + body + "\0CLOSE\0" + post_s, is_top)
    post = _expand(post_s, False) if post_s else [""]
    if is_seq:
        values = _sequence(body, bool(_ALPHA_SEQ.match(body)))
    else:
        parts = _comma_parts(body)
        if len(parts) == 1:
            values = ["{" + e + "}" for e in _expand(parts[0], False)]
            if len(values) == 1:
                return [pre + values[0] + p for p in post]
        else:
            values = [e for part in parts for e in _expand(part, False)]
    out = []
    for v in values:
        for p in post:
            expansion = pre + v + p
            if not is_top or is_seq or expansion:
                out.append(expansion)
                if len(out) >= _MAX_EXPANSIONS:
                    return out
    return out


def brace_expand(pattern: str) -> list[str]:
    """``a{b,c}d`` -> ``[abd, acd]``; ``{1..3}`` sequences; ``\\{`` stays literal; ``${`` is not expanded."""
    if not re.search(r"\{.*\}", pattern):
        return [pattern]
    if pattern.startswith("{}"):
        pattern = "\\{\\}" + pattern[2:]
    escapes = {"\\\\": "\0SLASH\0", "\\{": "\0OPEN\0", "\\}": "\0CLOSE\0", "\\,": "\0COMMA\0", "\\.": "\0PERIOD\0"}
    for raw, token in escapes.items():
        pattern = pattern.replace(raw, token)
    out = _expand(pattern, True)
    for raw, token in escapes.items():
        out = [o.replace(token, raw[1]) for o in out]
    return out


# --- one path part -> regex (minimatch's ``parse``) -----------------------------------------------------------


def _parse(pattern: str, sub: bool = False) -> tuple[str, bool] | str | object | None:
    """Translate one path part; returns a literal string, a regex source, ``_GLOBSTAR`` or None (invalid).

    With ``sub=True`` (re-parsing an unclosed ``[``) returns ``(regex source, has_magic)``.
    """
    if not sub and pattern == "**":
        return _GLOBSTAR
    if not sub and pattern == "":
        return ""
    out = ""
    has_magic = False
    escaping = False
    pl_stack: list[_PatternList] = []
    negative_lists: list[_PatternList] = []
    state_char = ""
    in_class = False
    re_class_start = -1
    class_start = -1
    pattern_start = "" if pattern.startswith(".") else "(?!\\.)"

    def clear_state_char() -> None:
        nonlocal out, has_magic, state_char
        if state_char:
            if state_char == "*":
                out += _STAR
                has_magic = True
            elif state_char == "?":
                out += _QMARK
                has_magic = True
            else:
                out += "\\" + state_char
            state_char = ""

    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if escaping and c in _RE_SPECIALS:
            out += "\\" + c
            escaping = False
            i += 1
            continue
        if c == "/":
            return None
        if c == "\\":
            clear_state_char()
            escaping = True
        elif c in "?*+@!":
            if in_class:
                if c == "!" and i == class_start + 1:
                    c = "^"
                out += c
            else:
                clear_state_char()
                state_char = c
        elif c == "(":
            if in_class:
                out += "("
            elif not state_char:
                out += "\\("
            else:
                open_, close = _PL_TYPES[state_char]
                pl_stack.append(_PatternList(state_char, len(out), open_, close))
                out += open_
                state_char = ""
        elif c == ")":
            if in_class or not pl_stack:
                out += "\\)"
            else:
                clear_state_char()
                has_magic = True
                pl = pl_stack.pop()
                out += pl.close
                if pl.type == "!":
                    negative_lists.append(pl)
                pl.re_end = len(out)
        elif c == "|":
            if in_class or not pl_stack or escaping:
                out += "\\|"
                escaping = False
            else:
                clear_state_char()
                out += "|"
        elif c == "[":
            clear_state_char()
            if in_class:
                out += "\\["
            else:
                in_class = True
                class_start = i
                re_class_start = len(out)
                out += c
        elif c == "]":
            if i == class_start + 1 or not in_class:
                out += "\\]"
                escaping = False
            else:
                cs = pattern[class_start + 1 : i]
                if not _valid_class(cs):
                    sp = _parse(cs, sub=True)
                    assert isinstance(sp, tuple)
                    out = out[:re_class_start] + "\\[" + sp[0] + "\\]"
                    has_magic = has_magic or sp[1]
                    in_class = False
                else:
                    has_magic = True
                    in_class = False
                    out += c
        else:
            clear_state_char()
            if escaping:
                escaping = False
            elif c in _RE_SPECIALS and not (c == "^" and in_class):
                out += "\\"
            out += _escape_for_python(c, in_class)
        i += 1

    if in_class:
        cs = pattern[class_start + 1 :]
        sp = _parse(cs, sub=True)
        assert isinstance(sp, tuple)
        out = out[:re_class_start] + "\\[" + sp[0]
        has_magic = has_magic or sp[1]

    while pl_stack:
        pl = pl_stack.pop()
        tail = out[pl.re_start + len(pl.open) :]
        tail = re.sub(r"((?:\\{2}){0,64})(\\?)\|", lambda m: m.group(1) + m.group(1) + (m.group(2) or "\\") + "|", tail)
        t = _STAR if pl.type == "*" else _QMARK if pl.type == "?" else "\\" + pl.type
        has_magic = True
        out = out[: pl.re_start] + t + "\\(" + tail

    clear_state_char()
    if escaping:
        out += "\\\\"

    add_pattern_start = out[:1] in (".", "[", "(")

    for nl in reversed(negative_lists):
        re_start, re_end = nl.re_start, nl.re_end
        before = out[:re_start]
        first = out[re_start : re_end - 8]
        last = out[re_end - 8 : re_end] + out[re_end:]
        after = out[re_end:]
        for _ in range(before.count("(")):
            after = re.sub(r"\)[+*?]?", "", after, count=1)
        dollar = "$" if after == "" and not sub else ""
        out = before + first + after + dollar + last

    if out and has_magic:
        out = "(?=.)" + out
    if add_pattern_start:
        out = pattern_start + out
    if sub:
        return out, has_magic
    if not has_magic:
        return re.sub(r"\\(.)", r"\1", pattern)
    return re.compile("^" + out + "$")


def _escape_for_python(c: str, in_class: bool) -> str:
    """Characters that are plain in a JS regex but special to Python's ``re`` (inside classes)."""
    if in_class and c in "[&~|":
        return "\\" + c
    return c


def _valid_class(cs: str) -> bool:
    """Whether ``[cs]`` compiles as a regex class (minimatch tries ``RegExp('[' + cs + ']')``)."""
    try:
        re.compile("[" + cs.replace("[", "\\[") + "]")
    except re.error:
        return False
    return True


# --- matching --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _compile(pattern: str) -> Callable[[str], bool]:
    """A predicate for ``pattern`` (cached: the worker matches every file against the same few patterns)."""
    pattern = pattern.strip()
    if pattern.startswith("#"):
        return lambda _path: False
    if not pattern:
        return lambda path: path == ""
    negate = False
    offset = 0
    while offset < len(pattern) and pattern[offset] == "!":
        negate = not negate
        offset += 1
    pattern = pattern[offset:]
    compiled = []
    for expanded in brace_expand(pattern):
        parts = [_parse(p) for p in re.split(r"/+", expanded)]
        if any(p is None for p in parts):
            continue
        compiled.append(parts)

    def predicate(path: str) -> bool:
        segments = re.split(r"/+", path)
        hit = any(_match_one(segments, parts) for parts in compiled)
        return hit != negate

    return predicate


def _match_one(file: list[str], pattern: list[object]) -> bool:
    fi = pi = 0
    fl, pl = len(file), len(pattern)
    while fi < fl and pi < pl:
        p, f = pattern[pi], file[fi]
        if p is _GLOBSTAR:
            pr = pi + 1
            if pr == pl:
                return all(not (seg in (".", "..") or seg.startswith(".")) for seg in file[fi:])
            fr = fi
            while fr < fl:
                if _match_one(file[fr:], pattern[pr:]):
                    return True
                swallowee = file[fr]
                if swallowee in (".", "..") or swallowee.startswith("."):
                    break
                fr += 1
            return False
        if isinstance(p, str):
            if f != p:
                return False
        elif not p.match(f):  # type: ignore[attr-defined]
            return False
        fi += 1
        pi += 1
    if fi == fl and pi == pl:
        return True
    if fi == fl:
        return False
    return fi == fl - 1 and file[fi] == ""
