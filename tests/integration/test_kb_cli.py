"""``omnichat kb``: the real command, as a child process, against the session's gateway and worker.

The command runs as ``python -m omnichat.cli kb ...`` through asyncio's subprocess API:
the gateway serves from this test process's event loop, so a blocking wait would
starve it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO, Gateway, Tenant

# The first document also waits for the worker to load MiniLM.
INGEST_TIMEOUT = 180.0

HOURS = """# Horários da Padaria Aurora

## Funcionamento

A Padaria Aurora abre de segunda a sábado das 6h às 20h. Aos domingos e feriados
funcionamos das 7h às 12h, só com balcão.
"""

DELIVERY = """Entregas da Padaria Aurora

Entregamos em toda a cidade de bicicleta. A taxa de entrega é de R$ 8,00 e pedidos
acima de R$ 80,00 têm frete grátis. Pedidos feitos até as 10h chegam no mesmo dia.
"""


async def kb_cli(gw: Gateway, t: Tenant, *args: str) -> tuple[int, str, str]:
    """Run ``omnichat kb ...`` against the gateway; (exit code, stdout, stderr)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMNICHAT_URL", "OMNICHAT_WORKSPACE_ID", "OMNICHAT_API_KEY")
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omnichat.cli",
        "kb",
        *args,
        "--url",
        gw.url,
        "--workspace",
        t.id,
        "--key",
        t.key,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), INGEST_TIMEOUT + 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def new_kb(gw: Gateway, t: Tenant) -> str:
    """A Portuguese knowledge base with the local embedder."""
    status, kb = await gw.call(
        "POST",
        "/api/v1/rag/knowledge-bases",
        key=t.key,
        workspace=t.id,
        json={"name": "Aurora", "language": "pt", "embedding": "local"},
    )
    assert status == 201, kb
    return str(kb["id"])


async def test_kb_ingest_then_search(
    gateway: Gateway, tenant: Tenant, worker: Any, tmp_path: Path
) -> None:
    """Two files ingested (exit 0, summary), then ``kb search`` finds the right one first."""
    kb = await new_kb(gateway, tenant)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "horarios.md").write_text(HOURS, encoding="utf-8")
    (docs / "entregas.txt").write_text(DELIVERY, encoding="utf-8")
    (docs / ".hidden.md").write_text("not uploaded", encoding="utf-8")

    code, out, err = await kb_cli(
        gateway, tenant, "ingest", str(docs), "--kb", kb, "--timeout", str(INGEST_TIMEOUT)
    )
    assert code == 0, (out, err)
    assert out.startswith("2 files: 2 ready (") and ", 0 failed, 0 duplicates" in out, out
    assert "2/2 ready, 0 failed" in err  # the progress bar's last state
    _, listing = await gateway.call(
        "GET", f"/api/v1/rag/knowledge-bases/{kb}/documents", key=tenant.key, workspace=tenant.id
    )
    assert sorted(d["filename"] for d in listing["items"]) == ["entregas.txt", "horarios.md"]
    assert all(d["status"] == "ready" and d["chunks"] >= 1 for d in listing["items"])

    code, out, err = await kb_cli(
        gateway, tenant, "search", "--kb", kb, "Qual é a taxa de entrega?", "-k", "2"
    )
    assert code == 0, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith(" 1. ") and "entregas.txt" in lines[0], out
    assert "R$ 8,00" in lines[1], out


async def test_kb_ingest_reports_duplicates_failures_and_api_errors(
    gateway: Gateway, tenant: Tenant, worker: Any, tmp_path: Path
) -> None:
    """A duplicate is reported, a failed document makes the exit code 1, API errors print."""
    kb = await new_kb(gateway, tenant)
    hours = tmp_path / "horarios.md"
    hours.write_text(HOURS, encoding="utf-8")
    code, out, err = await kb_cli(
        gateway, tenant, "ingest", str(hours), "--kb", kb, "--timeout", str(INGEST_TIMEOUT)
    )
    assert code == 0, (out, err)

    blank = tmp_path / "vazio.txt"
    blank.write_text("   \n\n  ", encoding="utf-8")
    code, out, err = await kb_cli(
        gateway, tenant, "ingest", str(hours), str(blank), "--kb", kb, "--timeout", "60"
    )
    assert code == 1, (out, err)
    assert out.startswith("2 files: 1 ready (") and ", 1 failed, 1 duplicates" in out, out
    assert f"{blank}: " in out and "duplicates (same content" in out, out
    assert f"{hours} -> document " in out, out

    missing = "00000000-0000-0000-0000-000000000000"
    code, out, err = await kb_cli(gateway, tenant, "search", "--kb", missing, "horário")
    assert code == 1
    assert "error: 404 not_found: knowledge base not found" in err, err
