"""Extraction in child processes with CPU-time, memory and wall-clock limits.

The readers of extract.py are linear, but the parsers under them (pypdf, python-docx, lxml)
are not ours: one page of 30,000 text lines costs pypdf the square of them, and a .docx can
expand to hundreds of megabytes. In the worker, such a document would hold the GIL (every
stage of that worker stops, its heartbeats too) or its memory. So ``extract`` runs in a
small pool of warm children (``python -m agents_pipeline.knowledge.sandbox``, which imports
extract.py and its parsers only: no torch, no openai, ~0.6 s to start, ~70 MB):

* ``RLIMIT_AS`` caps a child's memory (``memory_mb``); a ``MemoryError`` is answered and the
  child replaced;
* before each document a child sets its soft ``RLIMIT_CPU`` to the CPU time it has used plus
  ``cpu_seconds``: past it the kernel ends it with SIGXCPU;
* the parent gives up after ``timeout_seconds`` of wall time (a child stuck, or starved)
  and kills it.

Each of these fails the document with ``ExtractionError("extraction_limit", ...)``; the pool
starts a new child for the next one. A child serves documents one at a time: the request is
the file's bytes and a small JSON header, the answer the ``ExtractedDocument`` as JSON or the
``ExtractionError``, never a pickle (a child that a parser bug took over must not be able
to run code in the worker). A child exits when its stdin closes or its parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import math
import os
import resource
import signal
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO

from pydantic import TypeAdapter

from agents_pipeline.knowledge.extract import Block, ExtractedDocument, ExtractionError, extract

log = logging.getLogger(__name__)

__all__ = ["ExtractionLimits", "ExtractionPool"]

_LENGTH = struct.Struct(">Q")
_DOCUMENT, _BLOCKS, _ERROR, _OUT_OF_MEMORY, _READY = b"D", b"B", b"E", b"M", b"R"
# Blocks come back in frames of this many, each read into objects on its own between two
# turns of the worker's event loop: 600,000 blocks in one go held the GIL for seconds.
BLOCKS_PER_FRAME = 2000
_BLOCK_LIST = TypeAdapter(list[Block])
START_TIMEOUT = 60.0  # seconds a new child may take to import the parsers (~0.6 s idle)
# A child is replaced after this many documents: whatever a parser leaves behind (caches,
# a fragmented heap) does not pile up for ever.
DOCUMENTS_PER_CHILD = 200


@dataclass(frozen=True)
class ExtractionLimits:
    """What one document's extraction may use (settings ``OMNICHAT_EXTRACT_*``)."""

    cpu_seconds: int = 30
    memory_mb: int = 1024
    timeout_seconds: float = 60.0
    processes: int = 2


class ChildUnavailable(ExtractionError):
    """A child could not be started: the machine, not the document (retried later)."""

    retriable = True


# --- the child -------------------------------------------------------------------------------


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    """``size`` bytes, or None at the end of the stream (the parent is gone)."""
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _die_with_parent() -> None:
    """SIGKILL when the parent dies (Linux), set in the child itself: a ``preexec_fn`` in the
    multithreaded worker could deadlock between fork and exec."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before that took effect
        sys.exit(0)


def _limit_cpu(cpu_seconds: int) -> None:
    """Let this document use ``cpu_seconds`` more of CPU time than the child has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + cpu_seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def child_main(memory_mb: int) -> None:
    """Serve extraction requests on stdin/stdout until stdin closes."""
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a child killed by a limit dumps nothing
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot garble an answer
    answers.write(_READY)  # imported: from now on a document's time is its own
    answers.flush()
    while True:
        header_size = _read_exactly(requests, _LENGTH.size)
        if header_size is None:
            return
        header_bytes = _read_exactly(requests, _LENGTH.unpack(header_size)[0])
        data_size = _read_exactly(requests, _LENGTH.size)
        if header_bytes is None or data_size is None:
            return
        data = _read_exactly(requests, _LENGTH.unpack(data_size)[0])
        if data is None:
            return
        header = json.loads(header_bytes)
        _limit_cpu(int(header["cpu_seconds"]))
        frames: list[bytes] = []
        try:
            doc = extract(data, filename=header["filename"], mime_type=header["mime_type"])
            blocks = doc.blocks
            for start in range(0, len(blocks), BLOCKS_PER_FRAME):
                part = blocks[start : start + BLOCKS_PER_FRAME]
                frames.append(_BLOCKS + _BLOCK_LIST.dump_json(part))
            head = {"title": doc.title, "format": doc.format, "frames": len(frames)}
            answer = _DOCUMENT + json.dumps(head).encode()
        except ExtractionError as exc:
            answer = _ERROR + json.dumps({"code": exc.code, "message": exc.message}).encode()
        except MemoryError:
            answer, frames = _OUT_OF_MEMORY, []
        del data
        for message in (answer, *frames):
            answers.write(_LENGTH.pack(len(message)) + message)
        answers.flush()
        if answer == _OUT_OF_MEMORY:
            return  # whatever state the parser left is not worth keeping


# --- the parent ------------------------------------------------------------------------------


class _ChildDied(Exception):
    """The child ended (or was ended) before answering."""


class _Child:
    """One warm child process and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.documents = 0

    @classmethod
    async def start(cls, memory_mb: int) -> _Child:
        """A new child, once it has imported extract.py (~0.6 s); OSError if it cannot."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agents_pipeline.knowledge.sandbox",
            str(memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = cls(proc)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                ready = await proc.stdout.readexactly(1)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.CancelledError) as exc:
            await child.stop()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise OSError(f"the extraction process did not start ({exc!r})") from exc
        if ready != _READY:
            await child.stop()
            raise OSError(f"the extraction process said {ready!r} instead of being ready")
        return child

    @property
    def alive(self) -> bool:
        """Still running."""
        return self.proc.returncode is None

    async def ask(self, data: bytes, header: dict[str, object]) -> tuple[bytes, bytes, list[bytes]]:
        """Send one document; the answer's tag and body, and the block frames that follow a
        document. _ChildDied if the child ends first."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        self.documents += 1
        head = json.dumps(header).encode()

        async def message() -> bytes:
            size = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))[0]
            return await stdout.readexactly(size)

        try:
            stdin.write(_LENGTH.pack(len(head)) + head + _LENGTH.pack(len(data)))
            stdin.write(data)
            await stdin.drain()
            answer = await message()
            frames = []
            if answer[:1] == _DOCUMENT:
                for _ in range(json.loads(answer[1:])["frames"]):
                    frames.append((await message())[1:])
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise _ChildDied from exc
        return answer[:1], answer[1:], frames

    async def stop(self) -> None:
        """End it (closing stdin is enough for an idle child; a busy one is killed)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()


def _death_reason(returncode: int | None, limits: ExtractionLimits) -> str:
    """Why a child ended mid-document, in words for the document's error."""
    if returncode == -signal.SIGXCPU:
        return f"used over {limits.cpu_seconds} s of CPU time"
    if returncode is not None and returncode < 0:
        return f"the extraction process was killed ({signal.Signals(-returncode).name})"
    return f"the extraction process ended (exit status {returncode})"


class ExtractionPool:
    """A few warm extraction children shared by a worker's ingestion (one owner: its
    ``Resources``); ``extract`` waits for a free one."""

    def __init__(self, limits: ExtractionLimits) -> None:
        self.limits = limits
        self._idle: list[_Child] = []
        self._slots = asyncio.Semaphore(max(1, limits.processes))
        self._busy: set[_Child] = set()
        self._closed = False

    async def extract(
        self, data: bytes, *, filename: str | None, mime_type: str | None
    ) -> ExtractedDocument:
        """The document's blocks, extracted in a child within the limits; any failure is an
        ``ExtractionError`` (``extraction_limit`` when a limit ended it)."""
        async with self._slots:
            child = await self._take()
            limits = self.limits
            header = {
                "filename": filename,
                "mime_type": mime_type,
                "cpu_seconds": limits.cpu_seconds,
            }
            self._busy.add(child)
            try:
                async with asyncio.timeout(limits.timeout_seconds):
                    tag, body, frames = await child.ask(data, header)
            except TimeoutError:
                await child.stop()
                raise ExtractionError(
                    "extraction_limit", f"took over {limits.timeout_seconds:g} s"
                ) from None
            except _ChildDied:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await child.proc.wait()
                await child.stop()
                if self._closed:  # stopped with the worker: not the document's fault
                    raise ChildUnavailable("extraction_limit", "the worker is stopping") from None
                reason = _death_reason(child.proc.returncode, limits)
                raise ExtractionError("extraction_limit", reason) from None
            except BaseException:
                await child.stop()  # cancelled mid-document: its answer would be unreadable
                raise
            finally:
                self._busy.discard(child)
            self._give_back(child, tag)
        if tag == _DOCUMENT:
            head = json.loads(body)
            blocks: list[Block] = []
            for index, frame in enumerate(frames):
                frames[index] = b""  # let go of each frame once read
                blocks += _BLOCK_LIST.validate_json(frame)
                await asyncio.sleep(0)  # let the worker's other stages run between frames
            return ExtractedDocument(title=head["title"], format=head["format"], blocks=blocks)
        if tag == _ERROR:
            error = json.loads(body)
            raise ExtractionError(error["code"], error["message"])
        raise ExtractionError("extraction_limit", f"needed over {limits.memory_mb} MB of memory")

    async def _take(self) -> _Child:
        """An idle child, or a new one."""
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
        if self._closed:
            raise ChildUnavailable("extraction_limit", "the extraction pool is closed")
        try:
            return await _Child.start(self.limits.memory_mb)
        except OSError as exc:
            raise ChildUnavailable(
                "extraction_limit", f"could not start an extraction process: {exc}"
            ) from exc

    def _give_back(self, child: _Child, tag: bytes) -> None:
        """Keep a child that answered for the next document, unless it is due to go."""
        if self._closed or tag == _OUT_OF_MEMORY or child.documents >= DOCUMENTS_PER_CHILD:
            asyncio.get_running_loop().create_task(child.stop())
        else:
            self._idle.append(child)

    async def warm_up(self) -> None:
        """Start the children now rather than at the first document."""
        missing = self.limits.processes - len(self._idle) - len(self._busy)
        started = await asyncio.gather(
            *(_Child.start(self.limits.memory_mb) for _ in range(max(0, missing)))
        )
        self._idle.extend(started)

    async def close(self) -> None:
        """Stop every child (safe to call twice)."""
        self._closed = True
        children, self._idle = [*self._idle, *self._busy], []
        await asyncio.gather(*(child.stop() for child in children))


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
