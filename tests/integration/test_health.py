"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from gateway.routes import ROUTES
from tests.conftest import Gateway


async def test_health_and_ready(gateway: Gateway) -> None:
    assert (await gateway.call("GET", "/healthz"))[0] == 200
    status, body = await gateway.call("GET", "/readyz")
    assert status == 200 and body == {"broker": "ok", "database": "ok", "redis": "ok"}


async def test_openapi_describes_every_route(gateway: Gateway) -> None:
    status, doc = await gateway.call("GET", "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    for r in ROUTES:
        assert r.method.lower() in doc["paths"][r.path], (r.method, r.path)
    create = doc["paths"]["/api/v1/channels/"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"]


async def test_metrics_exposed(gateway: Gateway) -> None:
    await gateway.call("GET", "/healthz")
    status, text = await gateway.call("GET", "/metrics")
    assert status == 200
    assert 'omnichat_gateway_requests_total{method="GET",route="/healthz",status="200"}' in text


async def test_metrics_count_the_status_the_client_got(gateway: Gateway) -> None:
    await gateway.call("GET", "/api/v1/tenants/workspace")  # no key: 401 from the error format
    await gateway.call("GET", "/api/v1/no-such-route")
    status, text = await gateway.call("GET", "/metrics")
    assert status == 200
    assert (
        'omnichat_gateway_requests_total{method="GET",route="/api/v1/tenants/workspace",'
        'status="401"}' in text
    )
    assert 'omnichat_gateway_requests_total{method="GET",route="unmatched",status="404"}' in text
