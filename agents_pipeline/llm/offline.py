"""Deterministic extractive answers, so the stack can reply with no LLM key and no network.

The responder quotes the sentence(s) of the retrieved passages that share the most
words with the question (case- and accent-insensitive, stopwords ignored, with a
crude prefix stem so "funcionamento" meets "funciona"), and cites the passage as [1].
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel

from agents_pipeline.llm.tokens import count_tokens
from streams.contracts import RetrievedChunk

Language = Literal["pt", "en"]

DEFAULT_FALLBACK: dict[Language, str] = {
    "pt": "Desculpe, não encontrei essa informação.",
    "en": "Sorry, I could not find that information.",
}
LEAD_IN: dict[Language, str] = {"pt": "Segundo", "en": "According to"}

MAX_QUOTE_SENTENCES = 2
MAX_QUOTE_CHARS = 600
STEM_CHARS = 6

# Accent-free, lower-case: compared after _fold().
PT_STOPWORDS = frozenset(
    """
    a ao aos aquela aquelas aquele aqueles aquilo as ate com como da das de dela delas
    dele deles depois do dos e ela elas ele eles em entre era eram essa essas esse esses
    esta estas este estes estou eu foi for foram ha isso isto ja la lhe lhes mais mas me
    mesmo meu meus minha minhas muito na nas nao nem no nos nossa nosso num numa o os ou
    para pela pelas pelo pelos por pra qual quais quando que quem se seja sem ser seu
    seus so sua suas tambem te tem tenho ter teu tua um uma umas uns voce voces vc vcs
    onde quanto quanta quantos quantas sobre gostaria queria quero saber poderia pode
    posso favor ola oi bom boa dia tarde noite obrigado obrigada vou vai sao estao
    """.split()
)
EN_STOPWORDS = frozenset(
    """
    a an and are as at be by can could do does for from have hello hi how i in is it me
    my of on or please tell thanks the there this to was we what when where which who
    why will with would you your
    """.split()
)
STOPWORDS = PT_STOPWORDS | EN_STOPWORDS

# Words that say which language a message is in (accent-free).
_PT_MARKERS = frozenset(
    "nao voce voces qual quais quando onde como obrigado obrigada ola oi bom boa dia "
    "tarde noite que para por com uma um sim tem esta vcs vc de do da os as e".split()
)
_EN_MARKERS = frozenset(
    "the what when where how you your is are do does can could please thanks hello hi "
    "i my of and to yes have which".split()
)

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")
_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")


class OfflineAnswer(BaseModel):
    """What the offline responder said, the passage it quoted, and its token counts."""

    text: str
    source: RetrievedChunk | None
    prompt_tokens: int
    completion_tokens: int


def _fold(text: str) -> str:
    """Lower-case, accent-free text, so "Horário" and "horario" compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _stems(text: str) -> set[str]:
    """Content-word stems of ``text``: folded, stopwords dropped, cut to a common prefix."""
    stems: set[str] = set()
    for word in _WORD.findall(_fold(text)):
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        if len(word) > 3 and word.endswith("s"):
            word = word[:-1]
        stems.add(word[:STEM_CHARS])
    return stems


def guess_language(text: str) -> Language:
    """A cheap pt/en guess from marker words and accents; Portuguese wins ties (our users)."""
    words = _WORD.findall(_fold(text))
    pt = sum(w in _PT_MARKERS for w in words)
    en = sum(w in _EN_MARKERS for w in words)
    if any(ch in "ãõçáéíóúâêôà" for ch in text.casefold()):
        pt += 2
    return "en" if en > pt else "pt"


def fallback_reply(fallback_text: str | None, user_text: str) -> str:
    """The agent's fallback text, or a default in the user's language when it has none."""
    if fallback_text and fallback_text.strip():
        return fallback_text.strip()
    return DEFAULT_FALLBACK[guess_language(user_text)]


def _sentences(text: str) -> list[str]:
    """The non-empty sentences (and lines) of a passage, in order."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _quote(sentences: list[str], question: set[str]) -> tuple[int, str]:
    """Best overlap score and the most relevant sentence(s) of one passage, in text order."""
    scored = [(len(question & _stems(s)), i) for i, s in enumerate(sentences)]
    best = max((score for score, _ in scored), default=0)
    if best == 0:
        picked = [0]
    else:
        ranked = sorted((i for score, i in scored if score > 0), key=lambda i: (-scored[i][0], i))
        picked = sorted(ranked[:MAX_QUOTE_SENTENCES])
    quote = " ".join(_CITATION.sub("", sentences[i]) for i in picked)
    if len(quote) > MAX_QUOTE_CHARS:
        quote = quote[:MAX_QUOTE_CHARS].rsplit(" ", 1)[0] + "…"
    return best, quote


def answer_offline(
    *, user_text: str, chunks: list[RetrievedChunk], fallback_text: str | None
) -> OfflineAnswer:
    """Answer from the best passage, or with the fallback text when nothing was retrieved."""
    language = guess_language(user_text)
    question = _stems(user_text)
    best: tuple[int, str, RetrievedChunk] | None = None
    read = count_tokens(user_text)
    for chunk in chunks:
        sentences = _sentences(chunk.text)
        if not sentences:
            continue
        read += count_tokens(chunk.text)
        score, quote = _quote(sentences, question)
        # Strictly better only: on a tie the higher-ranked passage (earlier) is kept.
        if best is None or score > best[0]:
            best = (score, quote, chunk)
    if best is None:
        text = fallback_reply(fallback_text, user_text)
        return OfflineAnswer(
            text=text, source=None, prompt_tokens=read, completion_tokens=count_tokens(text)
        )
    _, quote, chunk = best
    title = chunk.document_title.strip()
    lead = f'{LEAD_IN[language]} "{title}": ' if title else ""
    text = f"{lead}{quote} [1]"
    return OfflineAnswer(
        text=text, source=chunk, prompt_tokens=read, completion_tokens=count_tokens(text)
    )
