"""Extracted documents → chunks sized for embedding, each able to stand alone in a prompt.

Rules, in order of precedence:

* A chunk never spans a heading: a section is a run of blocks under one heading path,
  and chunks are made per section. A heading with nothing under it (the next block is
  not inside it) is kept as a line of text of its parent section.
* Each chunk's text starts with its heading path, "Horários > Feriados\\n", so a chunk
  read alone still says what it is about; those tokens count toward the size.
* A question-answer pair is one chunk of its own, the question line then the answer
  line (no "Q:"/"Pergunta:" labels: the text stays in the document's own language). An
  answer too long for one chunk continues in further chunks that each repeat the
  question line, so no chunk holds an answer without its question.
* Other blocks (paragraphs, list items as "- item", table rows) are packed greedily up
  to ``max_tokens``. A block that does not fit in the current chunk starts the next one;
  a block too long for any chunk is split at sentence ends (Portuguese abbreviations such
  as "Sr.", "Dra.", "p.ex." do not end sentences), a sentence too long at line breaks,
  and a line too long at token boundaries (at a space when one is near).
* Consecutive chunks of one section overlap: the next starts with about
  ``overlap_tokens`` from the end of the previous, whole sentences when they fit, else
  the end of the last sentence from a word start. Overlap gives way (shrinks or goes)
  when keeping it would split a sentence that fits a chunk on its own.
* ``hard_limit_tokens`` caps every chunk in the embedding model's own tokens, counted by
  ``model_tokens`` (cl100k when not given): a section with a chunk over it is chunked
  again with a smaller ``max_tokens`` until none is; past the smallest size, chunks are
  halved at spaces (without the heading path if the path alone leaves no room).

Sizes are cl100k tokens (``agents_pipeline.llm.tokens``). The output depends only on the
input: positions are 0..n-1 in document order.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from agents_pipeline.knowledge.extract import Block, ExtractedDocument
from agents_pipeline.llm.tokens import count_tokens, encode, get_encoding, truncate_to_tokens

# Below this a chunk cannot hold a heading path and a few words (a character can take 4).
MIN_MAX_TOKENS = 16
HEADING_SEPARATOR = " > "


class Chunk(BaseModel):
    """A piece of a document to embed and to quote to the model."""

    model_config = ConfigDict(frozen=True)

    position: int = Field(ge=0, description="0..n-1 in document order.")
    text: str = Field(description="The heading path line, then the content.")
    tokens: int = Field(description="cl100k tokens of ``text``.")
    heading_path: list[str] = Field(default_factory=list)


# --- sentences -------------------------------------------------------------------------

_CLOSING = "\"'\u201d\u2019»)]"  # quotes and brackets that may follow a sentence's end
_OPENING = "\"'\u201c\u2018«([¿¡\u2014\u2013-"  # and that may open the next one
_SENTENCE_END = re.compile(rf"[.!?…]+[{re.escape(_CLOSING)}]*(?=\s)")
_DOTTED_ABBREVIATION = re.compile(r"^(?:[^\W\d_]{1,3}\.){2,}$")  # p.ex. S.A. a.C.
_ABBREVIATIONS = frozenset(
    # titles and forms of address
    {"sr", "sra", "srs", "sras", "srta", "dr", "dra", "drs", "dras", "prof", "profa", "profs"}
    | {"eng", "enga", "arq", "adv", "exmo", "exma", "ilmo", "ilma", "mr", "mrs", "ms", "jr"}
    # addresses, companies, phones
    | {"av", "al", "pça", "trav", "rod", "est", "apto", "ap", "bl", "cj", "sl", "lj", "cia"}
    | {"ltda", "depto", "dept", "tel", "cel", "fone", "st"}
    # references and quantities
    | {"pág", "pag", "págs", "pags", "cap", "art", "arts", "inc", "par", "vol", "ed", "fl"}
    | {"fls", "núm", "num", "aprox", "qtd", "qtde", "ref", "obs", "ex", "cf", "fig", "tab"}
    | {"vs", "séc"}
    # months and weekdays ("mar" is left out: it is also "sea")
    | {"jan", "fev", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez"}
    | {"seg", "ter", "qua", "qui", "sex", "sáb", "sab", "dom"}
)


def _is_abbreviation(before: str) -> bool:
    """Whether the word ending just before a period is an abbreviation or an initial."""
    words = before.split()
    word = words[-1].lstrip(_OPENING) if words else ""
    if not word:
        return False
    if len(word) == 1 and word.isalpha():
        return True
    return word.lower() in _ABBREVIATIONS or bool(_DOTTED_ABBREVIATION.match(word + "."))


def _sentence_starts(text: str) -> list[int]:
    """Indexes where sentences start: after . ! ? … and spaces, before a non-lowercase."""
    starts = [0]
    for match in _SENTENCE_END.finditer(text):
        rest = text[match.end() :]
        following = rest.lstrip()
        if not following:
            break
        punctuation = match[0].rstrip(_CLOSING)
        first = following.lstrip(_OPENING)[:1]
        strong = "!" in punctuation or "?" in punctuation
        if not strong and first.islower():
            continue
        if punctuation == "." and _is_abbreviation(text[starts[-1] : match.start()]):
            continue
        starts.append(match.end() + len(rest) - len(following))
    return starts


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, trailing spaces trimmed."""
    return [s for s in (p.rstrip() for _, p in _pieces(text, _sentence_starts(text))) if s]


# --- units: the atoms that chunks are packed from --------------------------------------


@dataclass(frozen=True, slots=True)
class _Unit:
    """A sentence (or a piece of one) and the whitespace that joins it to the unit before."""

    text: str
    sep: str
    tokens: int  # of sep + text: an estimate of what the unit adds to a chunk

    @classmethod
    def of(cls, text: str, sep: str) -> _Unit:
        """A unit with its token count."""
        return cls(text, sep, count_tokens(sep + text))


def _pieces(text: str, starts: list[int]) -> Iterator[tuple[str, str]]:
    """(whitespace before, text) for each span from one start to the next."""
    ends = [*starts[1:], len(text)]
    kept_end = 0
    for start, end in zip(starts, ends, strict=True):
        piece = text[start:end].rstrip()
        if piece:
            yield text[kept_end:start], piece
            kept_end = start + len(piece)


def _block_units(text: str, limit: int) -> list[_Unit]:
    """A block as sentences, breaking those over ``limit`` tokens at line breaks.

    Joining the units with their separators gives the block back; the first unit's
    separator is a newline, which is what separates blocks inside a chunk.
    """
    units: list[_Unit] = []
    for sep, sentence in _pieces(text, _sentence_starts(text)):
        unit = _Unit.of(sentence, sep if units else "\n")
        if unit.tokens > limit and "\n" in sentence:
            line_starts = [0, *(m.end() for m in re.finditer(r"\n", sentence))]
            lines = list(_pieces(sentence, line_starts))
            units.append(_Unit.of(lines[0][1], unit.sep))
            units.extend(_Unit.of(line, line_sep) for line_sep, line in lines[1:])
        else:
            units.append(unit)
    return units


def _render(units: list[_Unit]) -> str:
    """Units joined by their separators (the first one's is dropped)."""
    if not units:
        return ""
    return units[0].text + "".join(u.sep + u.text for u in units[1:])


def _token_tail(text: str, max_tokens: int) -> str:
    """About the last ``max_tokens`` tokens of ``text``, starting at a word when possible."""
    tokens = encode(text)
    if len(tokens) <= max_tokens:
        return text
    tail = get_encoding().decode_bytes(tokens[-max_tokens:]).decode("utf-8", errors="ignore")
    space = tail.find(" ")
    if 0 <= space < len(tail) // 2:
        tail = tail[space:]
    return tail.strip()


# --- packing ---------------------------------------------------------------------------


class _Packer:
    """Greedy packing of one section's blocks into chunk bodies that overlap."""

    def __init__(self, prefix: str, max_tokens: int, overlap_tokens: int) -> None:
        self.prefix = prefix
        self._prefix_tokens = count_tokens(prefix)
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.bodies: list[str] = []
        self._units: list[_Unit] = []
        self._carried = 0  # leading units repeated from the previous chunk

    def _fits(self, units: list[_Unit]) -> bool:
        """Exact when it says yes; a sum far over the limit says no without encoding it all."""
        estimate = self._prefix_tokens + sum(u.tokens for u in units)
        if estimate > self.max_tokens + 2 * len(units) + 2:  # joins merge a token or two
            return False
        return count_tokens(self.prefix + _render(units)) <= self.max_tokens

    def _has_body(self) -> bool:
        return len(self._units) > self._carried

    def _tail(self) -> list[_Unit]:
        """The overlap to carry: whole trailing sentences, else the end of the last one."""
        if self.overlap_tokens <= 0:
            return []
        picked: list[_Unit] = []
        for unit in reversed(self._units[1:]):  # never the whole chunk again
            if count_tokens(_render([unit, *picked])) > self.overlap_tokens:
                break
            picked.insert(0, unit)
        if not picked:
            last = self._units[-1]
            tail = _token_tail(last.text, self.overlap_tokens)
            if tail and tail != last.text:
                picked = [_Unit.of(tail, last.sep)]
        return picked

    def _next_chunk(self) -> None:
        """Close the current chunk and open the next with the overlap."""
        carried = self._tail()
        self.bodies.append(_render(self._units))
        self._units, self._carried = list(carried), len(carried)

    def _cut(self, unit: _Unit) -> tuple[_Unit, _Unit | None] | None:
        """The longest head of ``unit`` that fits in the current chunk, and the rest."""
        room = self.max_tokens - count_tokens(self.prefix + _render([*self._units, unit]))
        room += count_tokens(unit.text)
        head = truncate_to_tokens(unit.text, room)
        while head and not self._fits([*self._units, _Unit.of(head, unit.sep)]):
            head = truncate_to_tokens(head, count_tokens(head) - 1)
        space = head.rfind(" ")
        if len(head) < len(unit.text) and space > len(head) // 2:
            head = head[:space]
        head = head.rstrip()
        if not head:
            return None
        rest = unit.text[len(head) :]
        rest_sep = rest[: len(rest) - len(rest.lstrip())]
        rest = rest.strip()
        return _Unit.of(head, unit.sep), (_Unit.of(rest, rest_sep) if rest else None)

    def add_block(self, units: list[_Unit]) -> None:
        """Add a block whole if it fits here or in a fresh chunk, else sentence by sentence."""
        if not units:
            return
        if self._fits([*self._units, *units]):
            self._units.extend(units)
            return
        if self._has_body():
            carried = self._tail()
            if self._fits([*carried, *units]):
                self.bodies.append(_render(self._units))
                self._units, self._carried = [*carried, *units], len(carried)
                return
        queue = deque(units)
        while queue:
            unit = queue.popleft()
            if self._fits([*self._units, unit]):
                self._units.append(unit)
            elif self._has_body():
                self._next_chunk()
                queue.appendleft(unit)
            elif self._units and self._fits([unit]):  # fits alone: shorten the overlap
                self._units, self._carried = self._units[1:], self._carried - 1
                queue.appendleft(unit)
            elif (cut := self._cut(unit)) is not None:  # too long for any chunk
                head, rest = cut
                self._units.append(head)
                if rest is not None:
                    queue.appendleft(rest)
            elif self._units:  # nothing fits beside the overlap
                self._units, self._carried = [], 0
                queue.appendleft(unit)
            else:  # a prefix leaving no room for one character: one character at a time
                self._units.append(_Unit.of(unit.text[0], unit.sep))
                if unit.text[1:].strip():
                    queue.appendleft(_Unit.of(unit.text[1:].strip(), ""))

    def finish(self) -> list[str]:
        """The chunk bodies, the last one included."""
        if self._has_body():
            self.bodies.append(_render(self._units))
        self._units, self._carried = [], 0
        return self.bodies


# --- sections --------------------------------------------------------------------------


def _heading_prefix(path: list[str], max_tokens: int) -> str:
    """The path line that opens each chunk, cut to half a chunk at most."""
    if not path:
        return ""
    line = HEADING_SEPARATOR.join(path)
    if count_tokens(line + "\n") > max_tokens // 2:
        line = truncate_to_tokens(line, max_tokens // 2 - 1).rstrip()
    return line + "\n"


def _block_text(block: Block) -> str:
    """How a non-qa block reads inside a chunk."""
    return f"- {block.text}" if block.kind == "list_item" else block.text


def _pack(prefix: str, blocks: list[str], max_tokens: int, overlap_tokens: int) -> list[str]:
    """Chunk bodies for consecutive blocks under one prefix."""
    room = max_tokens - count_tokens(prefix)
    overlap = max(0, min(overlap_tokens, room // 2))
    packer = _Packer(prefix, max_tokens, overlap)
    for text in blocks:
        packer.add_block(_block_units(text, max(1, room - overlap)))
    return packer.finish()


def _qa_chunks(
    prefix: str, block: Block, max_tokens: int, overlap_tokens: int
) -> list[tuple[str, str]]:
    """(prefix, body) of one question-answer pair: the question line heads every part."""
    question, answer = block.question or "", block.answer or ""
    if not question or not answer:
        return [(prefix, b) for b in _pack(prefix, [block.text], max_tokens, overlap_tokens)]
    qa_prefix = f"{prefix}{question}\n"
    if count_tokens(qa_prefix) > max_tokens // 2:  # a question too long to repeat
        return [(prefix, b) for b in _pack(prefix, [block.text], max_tokens, overlap_tokens)]
    bodies = _pack(qa_prefix, [answer], max_tokens, overlap_tokens)
    return [(prefix, f"{question}\n{body}") for body in bodies]


def _chunk_section(
    path: list[str], blocks: list[Block], max_tokens: int, overlap_tokens: int
) -> list[tuple[str, str]]:
    """(prefix, body) pairs of one section: text packed between qa pairs, each pair alone."""
    prefix = _heading_prefix(path, max_tokens)
    out: list[tuple[str, str]] = []
    pending: list[str] = []

    def flush() -> None:
        out.extend((prefix, b) for b in _pack(prefix, pending, max_tokens, overlap_tokens))
        pending.clear()

    for block in blocks:
        if block.kind == "qa":
            flush()
            out.extend(_qa_chunks(prefix, block, max_tokens, overlap_tokens))
        else:
            pending.append(_block_text(block))
    flush()
    return out


def _is_empty_heading(blocks: list[Block], index: int) -> bool:
    """Whether nothing follows inside this heading (the next block is not under it)."""
    heading = blocks[index]
    if index + 1 >= len(blocks):
        return True
    inner = [*heading.heading_path, heading.text]
    return blocks[index + 1].heading_path[: len(inner)] != inner


def _sections(blocks: list[Block]) -> Iterator[tuple[list[str], list[Block]]]:
    """Runs of content blocks under one heading path; every heading with content ends one."""
    path: list[str] = []
    run: list[Block] = []
    for index, block in enumerate(blocks):
        if block.kind == "heading":
            if not _is_empty_heading(blocks, index):
                if run:
                    yield path, run
                run = []
                continue
            block = Block(kind="paragraph", text=block.text, heading_path=block.heading_path)
        if run and block.heading_path != path:
            yield path, run
            run = []
        path = block.heading_path
        run.append(block)
    if run:
        yield path, run


# --- hard limit ------------------------------------------------------------------------


def _bisect(prefix: str, body: str, fits: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Halve a body at a space until each half fits: the last resort of the hard limit."""
    if fits(prefix + body):
        return [(prefix, body)]
    if prefix and not fits(prefix + body[:1]):  # no room beside the heading path: drop it
        return _bisect("", body, fits)
    if len(body) <= 1:
        raise ValueError("hard_limit_tokens is too small for a single character")
    middle = len(body) // 2
    spaces = [i for i in (body.rfind(" ", 0, middle), body.find(" ", middle)) if 0 < i]
    cut = min(spaces, key=lambda i: abs(i - middle)) if spaces else middle
    left, right = body[:cut].rstrip(), body[cut:].lstrip()
    if not left or not right:
        left, right = body[:middle], body[middle:]
    return _bisect(prefix, left, fits) + _bisect(prefix, right, fits)


def _capped_section(
    path: list[str],
    blocks: list[Block],
    max_tokens: int,
    overlap_tokens: int,
    fits: Callable[[str], bool] | None,
    model_tokens: Callable[[str], int],
    hard_limit: int,
) -> list[tuple[str, str]]:
    """A section's chunks, re-made smaller until every one is within the hard limit."""
    budget = max_tokens
    while True:
        pairs = _chunk_section(path, blocks, budget, overlap_tokens)
        if fits is None:
            return pairs
        worst = max((model_tokens(p + b) for p, b in pairs), default=0)
        if worst <= hard_limit:
            return pairs
        if budget <= MIN_MAX_TOKENS:
            return [piece for p, b in pairs for piece in _bisect(p, b, fits)]
        budget = max(MIN_MAX_TOKENS, min(budget - 1, budget * hard_limit // worst))


# --- entry point -----------------------------------------------------------------------


def chunk(
    doc: ExtractedDocument,
    *,
    max_tokens: int = 200,
    overlap_tokens: int = 30,
    hard_limit_tokens: int | None = None,
    model_tokens: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """The document's chunks in order (see the module docstring for the rules).

    ``hard_limit_tokens`` with ``model_tokens`` (the embedding model's own counter, e.g.
    MiniLM word pieces, max 256) guarantees ``model_tokens(chunk.text) <= hard_limit``;
    without ``model_tokens`` the cap is in cl100k tokens. ``model_tokens`` alone is unused.
    """
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be in [0, max_tokens)")
    if hard_limit_tokens is not None and hard_limit_tokens < 1:
        raise ValueError("hard_limit_tokens must be positive")
    counter = model_tokens or count_tokens
    limit = hard_limit_tokens or 0
    fits = (lambda text: counter(text) <= limit) if hard_limit_tokens is not None else None
    chunks: list[Chunk] = []
    for path, blocks in _sections(doc.blocks):
        pairs = _capped_section(path, blocks, max_tokens, overlap_tokens, fits, counter, limit)
        for prefix, body in pairs:
            text = prefix + body
            chunks.append(
                Chunk(
                    position=len(chunks),
                    text=text,
                    tokens=count_tokens(text),
                    heading_path=list(path),
                )
            )
    return chunks
