"""GET /api/v1/usage: sums per day and month of usage_records, one workspace only."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from storage.usage import KINDS, usage_between
from tests.conftest import Gateway, Tenant, make_tenant

# Far in the past, so the session worker's live counters never land in these periods.
A_ROWS = {
    date(2021, 1, 30): (3, 2, 100, 40),
    date(2021, 1, 31): (5, 4, 250, 90),
    date(2021, 2, 1): (7, 6, 300, 120),
    date(2021, 3, 15): (1, 1, 10, 5),
}
B_ROWS = {
    date(2021, 1, 31): (1000, 900, 80000, 30000),
    date(2021, 2, 2): (2000, 1900, 90000, 40000),
}


async def insert_usage(
    pool: AsyncConnectionPool, workspace_id: str, rows: dict[date, tuple[int, ...]]
) -> None:
    """Write usage_records rows directly, as the stream's usage table would."""
    async with pool.connection() as conn, conn.transaction():
        for day, values in rows.items():
            await conn.execute(
                f"INSERT INTO usage_records (workspace_id, day, {', '.join(KINDS)})"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [uuid.UUID(workspace_id), day, *values],
            )


def item(period: str, values: tuple[int, ...]) -> dict[str, Any]:
    """An expected answer item."""
    return {"period": period, **dict(zip(KINDS, values, strict=True))}


def total(*rows: tuple[int, ...]) -> tuple[int, ...]:
    """Column sums."""
    return tuple(sum(col) for col in zip(*rows, strict=True))


async def get_usage(gw: Gateway, t: Tenant, query: str, key: str | None = None) -> tuple[int, Any]:
    """One call of the usage endpoint."""
    return await gw.call("GET", f"/api/v1/usage?{query}", key=key or t.key, workspace=t.id)


async def test_usage_by_day_and_month_per_workspace(
    gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    a = await make_tenant(gateway, "Usage A")
    b = await make_tenant(gateway, "Usage B")
    await insert_usage(pool, a.id, A_ROWS)
    await insert_usage(pool, b.id, B_ROWS)

    status, body = await get_usage(gateway, a, "from=2021-01-01&to=2021-12-31")
    assert status == 200, body
    assert body == {"items": [item(d.isoformat(), v) for d, v in sorted(A_ROWS.items())]}, (
        "default granularity is day"
    )

    status, body = await get_usage(gateway, a, "from=2021-01-31&to=2021-02-01&granularity=day")
    assert status == 200
    assert body["items"] == [
        item("2021-01-31", A_ROWS[date(2021, 1, 31)]),
        item("2021-02-01", A_ROWS[date(2021, 2, 1)]),
    ]

    status, body = await get_usage(gateway, a, "from=2021-01-01&to=2021-12-31&granularity=month")
    assert status == 200
    assert body["items"] == [
        item("2021-01", total(A_ROWS[date(2021, 1, 30)], A_ROWS[date(2021, 1, 31)])),
        item("2021-02", A_ROWS[date(2021, 2, 1)]),
        item("2021-03", A_ROWS[date(2021, 3, 15)]),
    ]
    # A month is cut by the range: only the days inside it count.
    status, body = await get_usage(gateway, a, "from=2021-01-31&to=2021-02-28&granularity=month")
    assert body["items"] == [
        item("2021-01", A_ROWS[date(2021, 1, 31)]),
        item("2021-02", A_ROWS[date(2021, 2, 1)]),
    ]

    # B sees only its own counters, never A's (and the other way round above).
    status, body = await get_usage(gateway, b, "from=2021-01-01&to=2021-12-31&granularity=month")
    assert status == 200
    assert body["items"] == [
        item("2021-01", B_ROWS[date(2021, 1, 31)]),
        item("2021-02", B_ROWS[date(2021, 2, 2)]),
    ]
    status, body = await get_usage(gateway, a, "from=2020-01-01&to=2020-12-31")
    assert body == {"items": []}


async def test_usage_agrees_with_usage_records(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    await insert_usage(pool, tenant.id, A_ROWS)
    for granularity in ("day", "month"):
        status, body = await get_usage(
            gateway, tenant, f"from=2021-01-15&to=2021-03-31&granularity={granularity}"
        )
        assert status == 200
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT to_char(day, %s) AS period,"
                + ", ".join(f" sum({k})::bigint AS {k}" for k in KINDS)
                + " FROM usage_records WHERE workspace_id = %s"
                " AND day BETWEEN '2021-01-15' AND '2021-03-31' GROUP BY 1 ORDER BY 1",
                ("YYYY-MM-DD" if granularity == "day" else "YYYY-MM", uuid.UUID(tenant.id)),
            )
            expected = [dict(r) for r in await cur.fetchall()]
            via_storage = await usage_between(
                conn,
                workspace_id=uuid.UUID(tenant.id),
                start=date(2021, 1, 15),
                end=date(2021, 3, 31),
                granularity=granularity,
            )
        assert body["items"] == expected
        assert len(via_storage) == len(expected)


async def test_usage_with_a_read_key(gateway: Gateway, tenant: Tenant) -> None:
    status, key = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "reader", "scopes": ["read"]},
    )
    assert status == 201
    status, body = await get_usage(gateway, tenant, "from=2021-01-01&to=2021-01-31", key["key"])
    assert status == 200 and body == {"items": []}
    status, _ = await gateway.call("GET", "/api/v1/usage?from=2021-01-01&to=2021-01-31")
    assert status == 401


@pytest.mark.parametrize(
    "query",
    [
        "",
        "to=2021-01-31",
        "from=2021-01-01",
        "from=2021-01-01&to=",
        "from=2021-13-01&to=2021-12-31",
        "from=2021-02-30&to=2021-03-01",
        "from=2021-1-1&to=2021-01-31",
        "from=20210101&to=2021-01-31",
        "from=2021-01-01T00:00:00&to=2021-01-31",
        "from=yesterday&to=2021-01-31",
        "from=2021-02-01&to=2021-01-31",
        "from=2021-01-01&to=2022-02-05",
        "from=2021-01-01&to=2021-01-31&granularity=week",
        "from=2021-01-01&to=2021-01-31&granularity=",
        "from=2021-01-01&to=2021-01-31&granularity=DAY",
    ],
)
async def test_usage_rejects_bad_parameters(gateway: Gateway, tenant: Tenant, query: str) -> None:
    status, body = await get_usage(gateway, tenant, query)
    assert status == 400, (query, body)
    assert body["error"]["code"] == "invalid_parameter"


async def test_usage_range_limit_is_400_days(gateway: Gateway, tenant: Tenant) -> None:
    # 2021-01-01 .. 2022-02-04 is exactly 400 days, both ends included.
    assert (await get_usage(gateway, tenant, "from=2021-01-01&to=2022-02-04"))[0] == 200
    assert (await get_usage(gateway, tenant, "from=2021-01-01&to=2022-02-05"))[0] == 400
    assert (await get_usage(gateway, tenant, "from=2021-01-01&to=2021-01-01"))[0] == 200
