"""The equivalence layer over math-verify: what is decided in Python, what is refused, what is left to it.

An answer (or gold) is read as one of these kinds, in this order:

* **number**: a plain decimal (``-1,000.5``, ``.5``, thousands separated by ``,`` ``{,}`` ``,\\!``
  ``\\,`` or single spaces), a fraction of integers (``\\frac{3}{4}``, ``-3/4``, mixed ``2\\frac{1}{2}``),
  scientific notation (``2.5 \\times 10^{3}``, ``3 \\cdot 10^8``, ``1.2e-3``, ``10^{6}``, ``2 million``), or a list of one
  value written several ways (``15\\frac{39}{40}, \\frac{639}{40}``); two numbers are compared exactly
  (as fractions), never by math-verify;
* **numbers**: a set (``\\{1, 2\\}`` or a bare ``1, 2``: order-free) or an interval or tuple
  (``(1, 2]``, ``(-\\infty, 3)``) of numbers, compared exactly element by element, brackets included;
* **text**: one to three words of letters (``Even``, ``\\text{no solution}``), compared case-
  and space-insensitively;
* **prose** (gold only): a sentence (4+ words) with nothing to verify: the gold cannot be scored;
* **math**: anything else, sent to math-verify (``parse`` + ``verify``) in a helper process.

Conventions (each one a choice; see docs/rewards.md): a plain comma between digits is a thousands
separator only when the whole answer is one number in groups of three after a non-zero lead (``1,000``),
otherwise it separates list items (``0,111`` is the list 0, 111, never 0.111); an answer that relates to
something (``x = 3``, ``k = 2 + 3 = 5``) is read after its last ``=`` unless the gold is itself an
equation; when the gold is a number, an unevaluated calculation (``-6 + -9``, ``2 \\times 4``, ``3^2``)
is wrong even if it evaluates to the gold (copying the question is a reward hack); answers too large or
deep to evaluate safely (see :func:`refusal`) are wrong without being evaluated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MAX_ANSWER_CHARS = 1000
"""Answers (and golds) longer than this are not evaluated (a final answer is short)."""
MAX_BRACE_DEPTH = 32
MAX_POWER_DIGITS = 100_000
"""A numeric power ``b^e`` with more than this many digits (``e * log10(b)``) is not evaluated."""
MAX_FACTORIAL = 10_000
ROUNDED_DECIMALS = 6
"""A decimal with at least this many places may be a rounded value (math-verify's default precision)."""

_SPACES_RE = re.compile(r"\\\\|\\[,;:! ]|~|\\q?quad\b")
_UNIT_WORDS_RE = re.compile(r"(\S+?)\s+([A-Za-z]{2,}\.?)(?:\s+([A-Za-z]{2,}\.?))?")
_NOT_UNITS = {"and", "or", "to", "plus", "minus", "times", "over", "of", "divided", "by", "mod"}
_NOT_UNITS |= {"hundred", "thousand", "million", "billion", "trillion"}  # scales, read by number()
_SPACE_GROUPS_RE = re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?: \d{3})+(?![\d,])")
THOUSANDS_RE = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
"""A plain number with thousands commas (``1,234.5``; not ``0,111`` nor ``1,23``)."""
_LIST_COMMA_RE = re.compile(r"(?<=\d),(?=\d)")
_PLAIN_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_SCI_RE = re.compile(
    r"(?P<m>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?:[eE](?P<e1>[+-]?\d{1,4})|"
    r"(?:\\times|\\cdot|[*×·x])\s*10\s*\^\s*(?:\{\s*(?P<e2>[+-]?\d{1,4})\s*\}|(?P<e3>[+-]?\d{1,4})))"
)
_FRACTION_RE = re.compile(
    r"(?P<sign>[+-]?)\s*(?:\\[dtc]?frac\s*(?:\{\s*(?P<a>[+-]?\d+)\s*\}|(?P<a1>\d))\s*(?:\{\s*(?P<b>[+-]?\d+)\s*\}|(?P<b1>\d))"
    r"|(?P<a2>\d+)\s*/\s*(?P<b2>\d+))"
)
_MIXED_RE = re.compile(r"(?P<sign>[+-]?)(?P<whole>\d+)\s*(?P<frac>\\[dtc]?frac\s*\{\s*\d+\s*\}\s*\{\s*\d+\s*\})")
_SCALES = {"hundred": 2, "thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_SCALE_RE = re.compile(
    r"(?P<n>[+-]?[\d.]+)\s*(?:\\text\s*\{\s*)?(?P<w>hundred|thousand|million|billion|trillion)\s*\}?", re.I
)
_INFINITY = {"\\infty": math.inf, "+\\infty": math.inf, "-\\infty": -math.inf, "\\inf": math.inf, "-\\inf": -math.inf}
_POWER_OF_TEN_RE = re.compile(r"10\s*\^\s*(?:\{\s*(?P<e>[+-]?\d{1,4})\s*\}|(?P<f>[+-]?\d{1,4}))")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|textit|textnormal|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z'-]*(?: [A-Za-z][A-Za-z'-]*){0,2}")
_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi", "inf", "infty", "infinity"}
_MATH_WORDS |= {"arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "min", "max", "gcd", "lcm", "mod", "det"}
_COMMAND_RE = re.compile(
    r"\\(?:text|mathrm|textbf|mbox|textnormal|operatorname|begin|end)\s*\{[^{}]*\}|\\[A-Za-z]+|[\^_]\{[^{}]*\}"
)
_PROSE_RE = re.compile(r"[A-Za-z]{4,}|[A-Za-z]{2,}\s+[A-Za-z]{2,}")
_CALCULATION_RE = re.compile(r"\d\s*(?:[-+*×·÷^/]|\\times|\\cdot|\\div)\s*[-+({]*\s*\d")
_BARE_FRACTION_RE = re.compile(r"[-+]?\d+\s*/\s*\d+")
_RELATION_RE = re.compile(r"(?<![<>!=:\\])=(?!=)")
_POWER_RE = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*(?:\{\s*([+-]?\d+)\s*\}|([+-]?\d+))")
_CHAINED_POWER_RE = re.compile(r"\^\s*[+-]?[\d.]+\s*\^")
_FACTORIAL_RE = re.compile(r"(\d+)\s*!")
_LETTER_RE = re.compile(r"[A-Za-z]")


def normalize_answer(answer: str) -> str:
    """Clean-up before reading an answer: strips surrounding ``$``/``\\(...\\)``/``\\[...\\]``, a
    leading currency sign, a trailing period, ``\\left``/``\\right``, LaTeX spacing (``\\,`` ``\\!``
    ``~`` ``\\quad``), the thousands separators ``{,}`` and spaces between digit groups (``1 000``),
    and up to two trailing unit words after a number (``"18 dollars"`` gives ``"18"``; connectives
    such as ``and``/``or`` are kept, so ``"3 or 4"`` stays as it is). Thousands separators are removed:
    the LaTeX ones (``{,}``, ``,\\!``, ``\\,``) and spaces between digit groups everywhere, plain commas
    only when the whole answer is one number (``1,000`` gives ``1000``); any other comma between digits
    separates list items and becomes ``", "`` (``0,111`` gives ``0, 111``, ``(102,104]`` ``(102, 104]``).
    ``−`` becomes ``-``."""
    s = answer.strip().replace("−", "-").replace("\\left", "").replace("\\right", "")
    for _ in range(2):
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                break
    s = re.sub(r"(?<=\d)\s*(?:\{\s*,\s*\}|,\s*\\!)\s*(?=\d{3})", "", s)  # 14{,}916, 11,\!111
    s = _SPACES_RE.sub(lambda m: m.group() if m.group() == "\\\\" else " ", s)  # \\ (a row break) stays
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^\\\$\s*", "", s)  # a leading currency sign
    s = re.sub(r"(?<!\\)\$", "", s).strip()  # inside an extracted answer, $ only delimits math ("$125$ miles")
    s = re.sub(r"\\math(?:rm|it)\s*\{\s*([A-Za-z])\s*\}", r"\1", s)  # \mathrm{e} is e
    s = _SPACE_GROUPS_RE.sub(lambda m: m.group().replace(" ", ""), s)
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    m = _UNIT_WORDS_RE.fullmatch(s)
    if m and number(m.group(1)) is not None:
        words = {w.lower().rstrip(".") for w in m.groups()[1:] if w}
        if not words & _NOT_UNITS:
            s = m.group(1)
    if THOUSANDS_RE.fullmatch(s):
        return s.replace(",", "")
    return _LIST_COMMA_RE.sub(", ", s)


def number(answer: str) -> Fraction | None:
    """The exact value of a plain number, a fraction of integers (``\\frac{3}{4}``, ``-3/4``) or a number
    in scientific notation (see the module docstring), else ``None``. ``"1,000.50"`` gives
    ``Fraction(2001, 2)``, ``"2.5 \\times 10^{3}"`` ``Fraction(2500)``."""
    s = answer.strip()
    if THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    try:
        if _PLAIN_RE.fullmatch(s):
            return Fraction(Decimal(s))
        if m := _FRACTION_RE.fullmatch(s):
            a, b = int(m["a"] or m["a1"] or m["a2"]), int(m["b"] or m["b1"] or m["b2"])
            return None if b == 0 else Fraction(-a if m["sign"] == "-" else a, b)
        if m := _SCALE_RE.fullmatch(s):  # 2 million
            value = number(m["n"])
            return None if value is None else value * 10 ** _SCALES[m["w"].lower()]
        if m := _MIXED_RE.fullmatch(s):  # 2\frac{1}{2} is 2 + 1/2, as in MATH
            value = int(m["whole"]) + number(m["frac"])
            return -value if m["sign"] == "-" else value
        if m := _SCI_RE.fullmatch(s):
            mantissa = Decimal(m["m"])
            if not 1 <= abs(mantissa) < 10 and m["e1"] is None:
                return None  # 25 x 10^2 is a calculation; scientific notation has 1 <= |m| < 10
            return Fraction(mantissa.scaleb(int(m["e1"] or m["e2"] or m["e3"])))
        if m := _POWER_OF_TEN_RE.fullmatch(s):
            return Fraction(10) ** int(m["e"] or m["f"])
    except (InvalidOperation, ValueError, OverflowError):
        return None
    return None


def numbers(answer: str) -> tuple[str, tuple | frozenset] | None:
    """A list of two or more numbers (endpoints may be ``\\infty``): ``("set", frozenset)`` for
    ``\\{1, 2\\}`` or a bare ``1, 2`` (order and repeats do not matter, as for math-verify's sets), or
    ``(brackets, tuple)`` for an interval or tuple such as ``(1, 2]`` (``brackets`` is ``"(]"``); else
    ``None``. Thousands separators must be gone (:func:`normalize_answer` removes them)."""
    s = answer.strip()
    if s.startswith("\\{") and s.endswith("\\}"):
        kind, body = "set", s[2:-2]
    elif s[:1] in "([" and s[-1:] in ")]":
        kind, body = s[0] + s[-1], s[1:-1]
    else:
        kind, body = "set", s
    parts = [p.strip() for p in body.split(",")]
    if len(parts) < 2:
        return None
    values = [_INFINITY.get(p, None) if p in _INFINITY else number(p) for p in parts]
    if any(v is None for v in values):
        return None
    return (kind, frozenset(values)) if kind == "set" else (kind, tuple(values))


def text(answer: str) -> str | None:
    """A textual answer (one to three words of letters, one of 3+ letters, no math function names;
    ``\\text{}``-like wrappers removed), case-folded with single spaces; else ``None``."""
    s = _TEXT_WRAP_RE.sub(r"\1", answer).replace("$", "")
    s = " ".join(s.split()).strip(" .")
    if not _TEXT_RE.fullmatch(s):
        return None
    words = s.casefold().split()
    if max(len(w) for w in words) < 3 or any(w in _MATH_WORDS for w in words):
        return None
    return " ".join(words)


def prose(answer: str) -> bool:
    """Whether ``answer`` reads as a sentence (LaTeX commands and ``\\text{}`` aside)."""
    return _PROSE_RE.search(_COMMAND_RE.sub(" ", answer)) is not None


def unevaluated_arithmetic(answer: str) -> bool:
    """True when ``answer`` is a calculation on numbers rather than its result (``-6 + -9``,
    ``2 \\times 4``, ``3^{2}``); a bare fraction (``1/2``) is a value.

    math-verify evaluates ``-6 + -9`` to ``-15``, so a policy that copies the question into
    ``<answer>`` would be scored correct: a reward hack a 135M model found within 20 GRPO steps.
    """
    answer = answer.strip()
    return not _BARE_FRACTION_RE.fullmatch(answer) and bool(_CALCULATION_RE.search(answer))


def has_relation(answer: str) -> bool:
    """Whether ``answer`` has a bare ``=`` (an equation or assignment; not ``<=``, ``\\neq``, ``==``)."""
    return _RELATION_RE.search(answer) is not None


def after_relation(answer: str) -> str:
    """The part after the last ``=`` (``"k = 2 + 3 = 5"`` gives ``"5"``), without an approximation after it
    (``"x = 1/3 \\approx 0.33"`` gives ``"1/3"``), or ``answer`` without ``=``."""
    parts = _RELATION_RE.split(answer)
    last = parts[-1].split("\\approx")[0].strip()
    return last if len(parts) > 1 and last else answer


def refusal(answer: str) -> str | None:
    """Why ``answer`` must not be evaluated, or ``None`` when it is safe to send to math-verify:
    longer than :data:`MAX_ANSWER_CHARS`, braces deeper than :data:`MAX_BRACE_DEPTH`, a numeric power
    tower (``9^9^9``, ``10^{10^{10}}``), a numeric power of more than :data:`MAX_POWER_DIGITS` digits,
    or a factorial above :data:`MAX_FACTORIAL`. Linear time."""
    if len(answer) > MAX_ANSWER_CHARS:
        return f"longer than {MAX_ANSWER_CHARS} characters"
    depth = deepest = 0
    for ch in answer:
        depth += ch == "{"
        depth -= ch == "}"
        deepest = max(deepest, depth)
    if deepest > MAX_BRACE_DEPTH:
        return f"braces nested deeper than {MAX_BRACE_DEPTH}"
    s = answer.replace("**", "^")
    if _CHAINED_POWER_RE.search(s) or _numeric_tower(s):
        return "a power tower"
    for m in _POWER_RE.finditer(s):
        base, exponent = Decimal(m[1]), abs(int(m[2] or m[3]))
        if base > 1 and exponent * base.log10() > MAX_POWER_DIGITS:
            return f"a power of more than {MAX_POWER_DIGITS} digits"
    if any(len(m[1]) > 6 or int(m[1]) > MAX_FACTORIAL for m in _FACTORIAL_RE.finditer(s)) or "!!" in s:
        return "a large factorial"
    if re.search(r"[)}]\s*!", s) and _numeric_groups(s, lambda g: "^" in g or "!" in g or re.search(r"\d{5}", g)):
        return "a large factorial"
    return None


def _numeric_groups(s: str, test, after: str = "") -> bool:
    """Whether a brace or parenthesis group of ``s`` without letters passes ``test``; with ``after``
    (a regular expression), only groups right after a match of it, else only groups followed by ``!``."""
    for opener, closer in (("{", "}"), ("(", ")")):
        stack, pairs = [], {}
        for i, ch in enumerate(s):
            if ch == opener:
                stack.append(i)
            elif ch == closer and stack:
                pairs[stack.pop()] = i
        for start, end in pairs.items():
            if after and not re.search(after + r"\s*$", s[max(0, start - 8) : start]):
                continue
            if not after and not s[end + 1 :].lstrip().startswith("!"):
                continue
            group = s[start + 1 : end].replace("\\cdot", "").replace("\\times", "")
            if not _LETTER_RE.search(group) and test(group):
                return True
    return False


def _numeric_tower(s: str) -> bool:
    """Whether an exponent group (``^{...}`` or ``^(...)``) holds another power and no letter: a numeric
    power tower such as ``10^{10^{10}}``, which SymPy would try to evaluate (``2^{2^{n}}`` is fine)."""
    return _numeric_groups(s, lambda g: "^" in g, after=r"\^")


def _rounded_equal(answer: Answer, gold: Answer) -> bool:
    """A decimal written with :data:`ROUNDED_DECIMALS` or more places equals a value that rounds to it
    (``0.333333`` and ``1/3``), either side; fewer places must be exact (``0.33`` is not ``1/3``)."""
    for rounded, exact in ((answer, gold), (gold, answer)):
        m = re.fullmatch(r"[+-]?\d*\.(\d+)", rounded.raw)
        if m and len(m[1]) >= ROUNDED_DECIMALS:
            places = len(m[1])
            if round(exact.value, places) == rounded.value:  # type: ignore[arg-type, call-overload]
                return True
    return False


@dataclass(frozen=True)
class Answer:
    """An answer (or gold) read once: its normalized text and kind (``number``, ``text``, ``prose``,
    ``math`` or ``refused``), with the number's value or the text's folded form."""

    raw: str
    kind: str
    value: Fraction | tuple | str | None = None


def read(answer: str, *, gold_has_relation: bool = True) -> Answer:
    """Normalize ``answer`` and tell its kind (see the module docstring); ``gold_has_relation=False``
    reads an answer after its last ``=``."""
    if len(answer) > 4 * MAX_ANSWER_CHARS:
        return Answer(answer[:80], "refused", f"longer than {MAX_ANSWER_CHARS} characters")
    s = normalize_answer(answer)
    if not gold_has_relation:
        s = after_relation(s)
    if (why := refusal(s)) is not None:
        return Answer(s, "refused", why)
    if (value := number(s)) is not None:
        return Answer(s, "number", value)
    if (items := numbers(s)) is not None:
        if items[0] == "set" and len(items[1]) == 1:  # 639/40, 15 39/40: one value written twice
            return Answer(s, "number", next(iter(items[1])))
        return Answer(s, "numbers", items)
    if (folded := text(s)) is not None:
        return Answer(s, "text", folded)
    return Answer(s, "prose" if prose(s) else "math")


def quick_verdict(answer: Answer, gold: Answer) -> float | None:
    """The verdict decided without math-verify (1.0 or 0.0), or ``None`` when math-verify must decide
    (both sides ``math``, or a number against math)."""
    if gold.kind in ("refused", "prose"):
        raise ValueError(f"a {gold.kind} gold answer cannot be scored")
    if answer.kind in ("refused", "prose"):
        return 0.0
    if answer.raw == gold.raw:
        return 1.0
    if gold.kind in ("number", "numbers"):
        if answer.kind == gold.kind == "number":
            return 1.0 if answer.value == gold.value or _rounded_equal(answer, gold) else 0.0
        if answer.kind in ("number", "numbers"):
            return 1.0 if answer.kind == gold.kind and answer.value == gold.value else 0.0
        if answer.kind == "text" or (gold.kind == "number" and unevaluated_arithmetic(answer.raw)):
            return 0.0
        return None
    if gold.kind == "text" or answer.kind == "text":
        return 1.0 if answer.kind == gold.kind == "text" and answer.value == gold.value else 0.0
    return None
