"""Shared sentences for the local models' tests, and a check that the event loop stays free."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from typing import TypeVar

T = TypeVar("T")

# (query, a Portuguese paraphrase that answers it, an unrelated sentence)
PARAPHRASES = [
    (
        "A que horas a padaria abre aos sábados?",
        "Aos sábados a padaria abre às 6h30.",
        "O bolo de cenoura leva cobertura de brigadeiro.",
    ),
    (
        "Posso pagar com Pix?",
        "Aceitamos pagamento por Pix e cartão.",
        "Cães pequenos são bem-vindos na varanda.",
    ),
    (
        "Quanto custa o pão de queijo?",
        "O pacote de pão de queijo custa R$ 42,00.",
        "A senha do Wi-Fi muda toda semana.",
    ),
]

PORTUGUESE_TEXT = (
    "Bolos do catálogo precisam ser encomendados com pelo menos 48 horas de antecedência. "
    "Bolos personalizados, com decoração temática ou papel de arroz com foto, precisam de "
    "5 dias úteis. Para confirmar uma encomenda cobramos um sinal de 50% do valor total, "
    "por Pix ou cartão, e o restante é pago na retirada."
)


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine of two unit vectors."""
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def norm(vector: Sequence[float]) -> float:
    """Euclidean length."""
    return math.sqrt(math.fsum(v * v for v in vector))


async def run_while_ticking(work: Awaitable[T], period: float = 0.005) -> tuple[T, int]:
    """Await ``work`` while a task ticks every ``period`` s: few ticks means a blocked loop."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(period)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        result = await work
    finally:
        stop.set()
        await task
    return result, ticks
