"""Language-consistency reward of DeepSeek-R1.

DeepSeek-AI (2025), "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via Reinforcement
Learning", §2.3.2: "calculated as the proportion of target language words in the CoT", added to
the accuracy reward to stop language mixing.
"""

from __future__ import annotations

import re
import unicodedata

from ._common import texts
from .extract import think_content
from .registry import register_reward

# Math and LaTeX never count, for or against: display/inline math, then \commands with their
# brace arguments (``\frac{a}{b}``), then escaped characters.
_LATEX_RE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[A-Za-z]+\*?(?:\s*\{[^{}]*\})*|\\.", re.DOTALL)
# A token: one CJK character (Han, kana, Hangul syllable) or a run of other letters.
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+")

_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA_RE = re.compile(r"[\u3040-\u30ff]")
_HANGUL_RE = re.compile(r"[\uac00-\ud7af]")


def _latin_ascii(token: str) -> bool:
    return token.isascii()


def _cyrillic(token: str) -> bool:
    return all("CYRILLIC" in unicodedata.name(ch, "") for ch in token)


LANGUAGES = {
    "en": _latin_ascii,  # words of ASCII latin letters
    "zh": lambda tok: bool(_HAN_RE.fullmatch(tok)),  # Han characters
    "ja": lambda tok: bool(_HAN_RE.fullmatch(tok) or _KANA_RE.fullmatch(tok)),  # kana and kanji
    "ko": lambda tok: bool(_HANGUL_RE.fullmatch(tok)),  # Hangul syllables
    "ru": _cyrillic,  # words of Cyrillic letters
}
"""Supported ``target_language`` codes → predicate telling whether a token is in the language."""


def language_tokens(text: str) -> list[str]:
    """The tokens that language consistency counts: each CJK character, and each run of other
    letters (a word of a space-delimited language). Numbers, punctuation, math symbols and LaTeX
    (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``, ``\\command{args}``) are dropped."""
    return _TOKEN_RE.findall(_LATEX_RE.sub(" ", text))


def consistency(text: str, target_language: str = "en") -> float:
    """Share of :func:`language_tokens` of ``text`` that are in ``target_language``.

    Returns:
        A value in [0, 1]; 0.0 when the text has no counted token.

    Raises:
        ValueError: for an unsupported language code.
    """
    check_language(target_language=target_language)
    tokens = language_tokens(text)
    if not tokens:
        return 0.0
    in_target = LANGUAGES[target_language]
    return sum(1 for t in tokens if in_target(t)) / len(tokens)


def check_language(*, target_language: str, **_) -> None:
    """Raises ``ValueError`` for an unsupported ``target_language``."""
    if target_language not in LANGUAGES:
        raise ValueError(f"unsupported target_language {target_language!r}; supported: {sorted(LANGUAGES)}")


@register_reward("language_consistency", check=check_language)
def language_consistency_reward(completions, *, target_language: str = "en", **kwargs) -> list[float]:
    """DeepSeek-R1's language-consistency reward (§2.3.2): the proportion of the chain of
    thought's words that are in the target language.

    The chain of thought is the text inside ``<think>…</think>`` (the whole completion when
    there is no think block; see :func:`rewards.extract.think_content`). Words are letter runs
    for space-delimited languages (``en``: ASCII latin letters; ``ru``: Cyrillic) and single
    characters for CJK (``zh``: Han; ``ja``: kana and Han; ``ko``: Hangul). Numbers, math
    symbols and LaTeX are excluded from the denominator.

    Args:
        completions: generated texts.
        target_language: one of ``en``, ``zh``, ``ja``, ``ko``, ``ru``.
        **kwargs: columns, ignored.

    Returns:
        Per completion, a value in [0, 1]; 0.0 for an empty chain of thought.

    Raises:
        ValueError: for an unsupported ``target_language``.
    """
    check_language(target_language=target_language)
    return [consistency(think_content(t), target_language) for t in texts(completions)]
