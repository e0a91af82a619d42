"""``omnichat kb``: fill a knowledge base from files and search it, through the REST API.

``ingest`` uploads files (directories are walked) as multipart documents, polls each
document until the worker marks it ``ready`` or ``failed``, draws a progress bar on
stderr and prints a summary on stdout. ``search`` prints the top results of a
question. Both exit non-zero on any failed document or API error, printing the
error's message, so scripts can rely on the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from omnichat.settings import Settings

POLL_INTERVAL = 0.5
UPLOAD_CONCURRENCY = 4
POLL_CONCURRENCY = 8
BAR_WIDTH = 30
SNIPPET_CHARS = 240
DONE = ("ready", "failed")


class ApiFailure(Exception):
    """The gateway answered with an error (or could not be reached)."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        head = f"{self.status} " if self.status is not None else ""
        return f"{head}{self.code}: {self.message}"


class Client:
    """The few calls of /api/v1/rag/ these commands make, errors turned into ApiFailure."""

    def __init__(self, http: aiohttp.ClientSession, base: str, workspace: str, key: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}", "X-Workspace-ID": workspace}

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """One request; (status, JSON body) on success, ApiFailure otherwise."""
        try:
            async with self.http.request(
                method, self.base + path, headers=self.headers, **kw
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ApiFailure(None, "connection_error", f"{self.base}: {exc}") from exc
        try:
            body = _json(text)
        except ValueError:
            body = None
        if status >= 400 or body is None:
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict):
                raise ApiFailure(status, str(err.get("code")), str(err.get("message")))
            raise ApiFailure(status, "http_error", text.strip()[:300] or "empty answer")
        return status, body

    async def upload(self, kb: str, path: Path) -> tuple[int, dict[str, Any]]:
        """POST one file as a multipart document."""
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = await asyncio.to_thread(path.read_bytes)
        form = aiohttp.FormData()
        form.add_field("file", data, filename=path.name, content_type=mime)
        return await self.call("POST", f"/api/v1/rag/knowledge-bases/{kb}/documents", data=form)

    async def document(self, kb: str, doc_id: str) -> dict[str, Any]:
        """A document's status, chunk count and error."""
        _, body = await self.call("GET", f"/api/v1/rag/knowledge-bases/{kb}/documents/{doc_id}")
        return body

    async def search(self, kb: str, query: str, k: int) -> list[dict[str, Any]]:
        """The search API's top-k chunks."""
        _, body = await self.call(
            "POST",
            "/api/v1/rag/search",
            json={"knowledge_base_ids": [kb], "query": query, "k": k},
        )
        return list(body["items"])


def _json(text: str) -> Any:
    """Parse JSON, None for an empty body."""
    return json.loads(text) if text.strip() else None


# --- ingest ----------------------------------------------------------------------------


@dataclass
class Item:
    """One file on its way into the knowledge base."""

    path: Path
    doc_id: str | None = None
    status: str = "queued"  # queued | uploading | pending | processing | ready | failed
    duplicate: bool = False
    chunks: int = 0
    error: str | None = None


@dataclass
class Progress:
    """The stderr progress bar: redrawn in place with \\r when something changes."""

    stream: IO[str]
    total: int
    last: str = field(default="", init=False)

    def draw(self, items: list[Item], uploading: bool) -> None:
        """Redraw the bar if its text changed."""
        ready = sum(i.status == "ready" for i in items)
        failed = sum(i.status == "failed" for i in items)
        done = ready + failed
        filled = BAR_WIDTH * done // self.total if self.total else BAR_WIDTH
        text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {ready}/{self.total} ready"
        text += f", {failed} failed"
        if uploading:
            sent = sum(i.status not in ("queued", "uploading") for i in items)
            text += f" (uploaded {sent}/{self.total})"
        if text != self.last:
            pad = " " * max(0, len(self.last) - len(text))
            self.stream.write(f"\r{text}{pad}")
            self.stream.flush()
            self.last = text

    def close(self) -> None:
        """End the bar's line."""
        if self.last:
            self.stream.write("\n")
            self.stream.flush()


def _hidden(relative: Path) -> bool:
    """A dot file, or a file inside a dot directory (.git, .DS_Store)."""
    return any(part.startswith(".") for part in relative.parts)


def expand(paths: Iterable[str]) -> list[Path]:
    """Files named, and the files under directories named (hidden ones skipped), sorted."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {raw}")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


async def _upload_all(client: Client, kb: str, items: list[Item]) -> None:
    """Upload every file, a few at a time; a refusal is that file's failure."""
    limit = asyncio.Semaphore(UPLOAD_CONCURRENCY)
    fatal: list[ApiFailure] = []

    async def one(item: Item) -> None:
        async with limit:
            if fatal:
                item.status, item.error = "failed", "not uploaded (earlier API error)"
                return
            item.status = "uploading"
            try:
                _, body = await client.upload(kb, item.path)
            except ApiFailure as exc:
                item.status, item.error = "failed", str(exc)
                # Auth, missing base, gateway down: every other upload would fail the same way.
                if exc.status in (401, 403, 404) or exc.status is None:
                    fatal.append(exc)
                return
            except OSError as exc:
                item.status, item.error = "failed", f"cannot read: {exc}"
                return
            item.doc_id = str(body["id"])
            item.duplicate = bool(body.get("duplicate"))
            item.status = str(body.get("status") or "pending")
            item.chunks = int(body.get("chunks") or 0)
            if item.status == "failed":
                item.error = body.get("error")

    await asyncio.gather(*(one(i) for i in items))
    if fatal:
        raise fatal[0]


async def _poll(client: Client, kb: str, items: list[Item]) -> None:
    """Refresh the status of every uploaded document not yet ready or failed."""
    limit = asyncio.Semaphore(POLL_CONCURRENCY)

    async def one(item: Item) -> None:
        async with limit:
            assert item.doc_id is not None
            doc = await client.document(kb, item.doc_id)
            item.status = str(doc["status"])
            item.chunks = int(doc.get("chunks") or 0)
            item.error = doc.get("error")

    waiting = [i for i in items if i.doc_id is not None and i.status not in DONE]
    await asyncio.gather(*(one(i) for i in waiting))


async def ingest(
    client: Client, kb: str, paths: list[Path], *, timeout: float, progress: Progress
) -> list[Item]:
    """Upload the files and wait until each is ready or failed (or the timeout passes)."""
    items = [Item(p) for p in paths]
    uploads = asyncio.create_task(_upload_all(client, kb, items))
    deadline = time.monotonic() + timeout
    try:
        while True:
            progress.draw(items, uploading=not uploads.done())
            if uploads.done():
                uploads.result()  # a fatal API error stops here
                if all(i.status in DONE for i in items):
                    return items
                if time.monotonic() > deadline:
                    return items
            await asyncio.sleep(POLL_INTERVAL)
            await _poll(client, kb, items)
    finally:
        if not uploads.done():
            uploads.cancel()
        progress.close()


def summary(items: list[Item], out: IO[str]) -> bool:
    """Print what happened to each file; True when every file ended ready."""
    ready = [i for i in items if i.status == "ready"]
    failed = [i for i in items if i.status == "failed"]
    waiting = [i for i in items if i.status not in DONE]
    dupes = [i for i in items if i.duplicate]
    chunks = sum(i.chunks for i in ready)
    line = f"{len(items)} files: {len(ready)} ready ({chunks} chunks), {len(failed)} failed"
    line += f", {len(dupes)} duplicates"
    if waiting:
        line += f", {len(waiting)} still waiting"
    print(line, file=out)
    if failed:
        print("failed:", file=out)
        for i in failed:
            print(f"  {i.path}: {i.error or 'unknown error'}", file=out)
    if dupes:
        print(
            "duplicates (same content already in this knowledge base, not ingested again):",
            file=out,
        )
        for i in dupes:
            print(f"  {i.path} -> document {i.doc_id} ({i.status})", file=out)
    if waiting:
        print("still waiting (is a worker running?):", file=out)
        for i in waiting:
            print(f"  {i.path} -> document {i.doc_id} ({i.status})", file=out)
    return not failed and not waiting


# --- search ----------------------------------------------------------------------------


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """One line of the chunk's text, cut at a word near ``limit`` characters."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut) + " …"


def print_results(results: list[dict[str, Any]], out: IO[str]) -> None:
    """Score, document title, chunk position and a snippet of each result."""
    if not results:
        print("no results", file=out)
        return
    for n, r in enumerate(results, 1):
        print(f"{n:>2}. {r['score']:.4f}  {r['document_title']}  (chunk {r['position']})", file=out)
        print(f"    {snippet(r['text'])}", file=out)


# --- entry point -----------------------------------------------------------------------


def _target(settings: Settings, args: argparse.Namespace) -> tuple[str, str, str]:
    """Gateway URL, workspace and key from the flags, else OMNICHAT_URL/_WORKSPACE_ID/_API_KEY."""
    url = (
        args.url
        or os.environ.get("OMNICHAT_URL")
        or f"http://{settings.gateway_host}:{settings.gateway_port}"
    )
    workspace = args.workspace or os.environ.get("OMNICHAT_WORKSPACE_ID")
    key = args.key or os.environ.get("OMNICHAT_API_KEY")
    missing = [
        name
        for name, value in (
            ("--workspace (or OMNICHAT_WORKSPACE_ID)", workspace),
            ("--key (or OMNICHAT_API_KEY)", key),
        )
        if not value
    ]
    if missing:
        raise ValueError("missing " + " and ".join(missing))
    assert workspace is not None and key is not None
    return url, workspace, key


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    url, workspace, key = _target(settings, args)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        client = Client(http, url, workspace, key)
        if args.kb_command == "search":
            print_results(await client.search(args.kb, args.question, args.k), sys.stdout)
            return 0
        paths = expand(args.paths)
        if not paths:
            print("no files to ingest", file=sys.stderr)
            return 2
        progress = Progress(sys.stderr, len(paths))
        items = await ingest(client, args.kb, paths, timeout=args.timeout, progress=progress)
        return 0 if summary(items, sys.stdout) else 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``omnichat kb ingest|search``: 0 on success, 1 on a failed document or API error."""
    try:
        return asyncio.run(_run(settings, args))
    except ApiFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
