"""The deployment files: docker-compose.yml, Prometheus and the Grafana dashboard.

There is no Docker engine here, but ``docker-compose config`` (Debian's 1.29.2) validates
and interpolates the compose file offline. When the binary is missing, the test installs
it with apt (CI runs as root); it never skips. No YAML parser: the compose file is read
through ``docker-compose config`` and the other files as text or JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.metrics import GatewayMetrics
from streams.metrics import StreamMetrics

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS = REPO / "ops" / "prometheus" / "prometheus.yml"
DATASOURCES = REPO / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = REPO / "ops" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = REPO / "ops" / "grafana" / "dashboards" / "omnichat.json"

SERVICES = {
    "redpanda",
    "postgres",
    "redis",
    "migrate",
    "gateway",
    "worker-1",
    "worker-2",
    "prometheus",
    "grafana",
}
WORKERS = ("worker-1", "worker-2")
REQUIRED_ENV = ("OMNICHAT_ADMIN_TOKEN", "OMNICHAT_SECRET_KEY")

# The metrics the processes export (docs: gateway and workers), by Prometheus type.
COUNTERS = {
    "omnichat_gateway_requests_total",
    "omnichat_webhooks_accepted_total",
    "omnichat_webhook_idempotent_hits_total",
    "omnichat_webhook_signature_failures_total",
    "omnichat_webhook_broker_unavailable_total",
    "omnichat_stage_events_in_total",
    "omnichat_stage_events_out_total",
    "omnichat_stage_events_failed_total",
    "omnichat_dedupe_hits_total",
    "omnichat_llm_calls_total",
    "omnichat_llm_tokens_total",
    "omnichat_llm_cost_usd_total",
    "omnichat_provider_sends_total",
    "omnichat_window_refusals_total",
}
HISTOGRAMS = {
    "omnichat_gateway_request_duration_seconds",
    "omnichat_gateway_produce_duration_seconds",
    "omnichat_stage_duration_seconds",
    "omnichat_reply_latency_seconds",
    "omnichat_llm_duration_seconds",
}
GAUGES = {"omnichat_consumer_lag"}
# Prometheus's own series for each scrape target (never empty while Prometheus runs).
PROMETHEUS_OWN = {"up"}

# Series names a query can select: a histogram exists only as _bucket, _sum and _count.
SERIES = (
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

# What the dashboard must show (the panels the operators rely on).
DASHBOARD_MUST_USE = {
    "omnichat_webhooks_accepted_total",
    "omnichat_gateway_request_duration_seconds_bucket",
    "omnichat_reply_latency_seconds_bucket",
    "omnichat_consumer_lag",
    "omnichat_stage_events_in_total",
    "omnichat_stage_events_out_total",
    "omnichat_stage_events_failed_total",
    "omnichat_llm_tokens_total",
    "omnichat_llm_cost_usd_total",
    "omnichat_gateway_requests_total",
    "omnichat_webhook_signature_failures_total",
    "omnichat_webhook_broker_unavailable_total",
    "omnichat_webhook_idempotent_hits_total",
}

PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


# --- docker-compose -------------------------------------------------------------------


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _install_docker_compose() -> None:
    """apt-get install docker-compose; apt-get update first only if the lists lack it."""
    if os.geteuid() != 0:
        pytest.fail("docker-compose is missing and only root can install it (apt-get)")
    if shutil.which("apt-get") is None:
        pytest.fail("docker-compose is missing and there is no apt-get to install it")
    install = ("install", "-y", "-q", "--no-install-recommends", "docker-compose")
    done = _apt_get(*install)
    if done.returncode != 0:
        update = _apt_get("update", "-q")
        assert update.returncode == 0, update.stdout + update.stderr
        done = _apt_get(*install)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def docker_compose() -> str:
    """Path of the docker-compose binary, installed when absent."""
    found = shutil.which("docker-compose")
    if found is None:
        _install_docker_compose()
        found = shutil.which("docker-compose")
    assert found, "docker-compose is still missing after apt-get install"
    return found


def _env(**extra: str) -> dict[str, str]:
    """The environment without any OMNICHAT_/compose variable of the caller, plus extra."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OMNICHAT_", "COMPOSE_", "POSTGRES_", "GRAFANA_", "PROMETHEUS_"))
    }
    env.update(extra)
    return env


def _compose(
    binary: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=env if env is not None else _env(**dict.fromkeys(REQUIRED_ENV, "x")),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose_config(docker_compose: str) -> str:
    """`docker-compose config`: the validated, interpolated file as YAML text."""
    done = _compose(docker_compose, "config")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _service_blocks(config: str) -> dict[str, str]:
    """Each service's lines of `docker-compose config` output, by service name."""
    blocks: dict[str, list[str]] = {}
    section = current = None
    for line in config.splitlines():
        if line and not line[0].isspace():  # a top-level key: services, volumes, ...
            section, current = line.rstrip(":"), None
        elif section == "services" and re.fullmatch(r"  [^\s:#][^:]*:", line):
            current = line.strip().rstrip(":")
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line)
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def test_compose_file_validates(docker_compose: str) -> None:
    done = _compose(docker_compose, "config", "--quiet")
    assert done.returncode == 0, done.stderr


def test_compose_has_every_service(docker_compose: str) -> None:
    done = _compose(docker_compose, "config", "--services")
    assert done.returncode == 0, done.stderr
    services = set(done.stdout.split())
    assert services >= SERVICES, f"missing: {sorted(SERVICES - services)}"


def test_compose_requires_the_secrets(docker_compose: str) -> None:
    for name in REQUIRED_ENV:
        others = {k: "x" for k in REQUIRED_ENV if k != name}
        done = _compose(docker_compose, "config", "--quiet", env=_env(**others))
        assert done.returncode != 0
        assert f"set {name}" in done.stderr, done.stderr


def test_compose_wiring(compose_config: str) -> None:
    blocks = _service_blocks(compose_config)
    assert set(blocks) >= SERVICES, sorted(blocks)
    for name in ("migrate", "gateway", *WORKERS):
        block = blocks[name]
        assert "OMNICHAT_BROKER_URL: kafka://redpanda:9092" in block, name
        assert "OMNICHAT_DATABASE_URL: postgresql://" in block, name
        assert "OMNICHAT_REDIS_URL: redis://redis:6379/0" in block, name
    for name in ("gateway", *WORKERS):
        assert "condition: service_completed_successfully" in blocks[name], name
        assert "condition: service_healthy" in blocks[name], name
    assert "OMNICHAT_GATEWAY_HOST: 0.0.0.0" in blocks["gateway"]
    # One consumer group, one Faust web port each, bound beyond the container's loopback.
    ids = {re.search(r"OMNICHAT_WORKER_ID: (\S+)", blocks[w]).group(1) for w in WORKERS}
    assert len(ids) == 1, ids
    ports = {_worker_port(blocks[w]) for w in WORKERS}
    assert len(ports) == len(WORKERS), ports
    for w in WORKERS:
        assert "OMNICHAT_WORKER_WEB_BIND: 0.0.0.0" in blocks[w], w
    assert "rpk cluster health" in blocks["redpanda"]
    assert "dev-container" in blocks["redpanda"]
    assert "pgvector/pgvector:pg16" in blocks["postgres"]
    assert "pg_isready" in blocks["postgres"]
    assert "redis-cli" in blocks["redis"]
    assert "/readyz" in blocks["gateway"]
    assert "/etc/prometheus/prometheus.yml" in blocks["prometheus"]
    assert "/etc/grafana/provisioning" in blocks["grafana"]


def _worker_port(block: str) -> int:
    match = re.search(r"OMNICHAT_WORKER_WEB_PORT: '?(\d+)'?", block)
    assert match, block
    return int(match.group(1))


# --- Prometheus -----------------------------------------------------------------------


def test_prometheus_scrapes_gateway_and_workers(compose_config: str) -> None:
    text = PROMETHEUS.read_text()
    blocks = _service_blocks(compose_config)
    targets = set(re.findall(r"[\"']([\w.-]+:\d+)[\"']", text))
    assert "gateway:8080" in targets, targets
    for w in WORKERS:
        assert f"{w}:{_worker_port(blocks[w])}" in targets, (w, targets)
    assert "metrics_path: /metrics" in text


# --- Grafana --------------------------------------------------------------------------


def _datasource_uid() -> str:
    match = re.search(r"^\s*uid:\s*(\S+)\s*$", DATASOURCES.read_text(), re.MULTILINE)
    assert match, "the provisioned data source has no uid"
    return match.group(1)


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def promql_metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (functions, labels and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if word.lower() in PROMQL_KEYWORDS or re.match(r"\s*\(", text[match.end() :]):
            continue  # a keyword, or a function / aggregation
        names.add(word)
    return names


def test_promql_metric_names() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, stage) ("
        'rate(omnichat_stage_duration_seconds_bucket{stage!="x"}[$__rate_interval])))'
        " / on (stage) group_left sum(rate(foo_total[5m] offset 1h)) or vector(0)"
    )
    assert promql_metric_names(expr) == {"omnichat_stage_duration_seconds_bucket", "foo_total"}


def test_metric_list_matches_the_code() -> None:
    """Every name this test allows is one the gateway or a worker really exports."""
    exported: set[str] = set()
    for registry in (GatewayMetrics().registry, StreamMetrics().registry):
        for family in registry.collect():
            if family.type == "counter":
                exported.add(f"{family.name}_total")
            elif family.type == "histogram":
                exported |= {f"{family.name}{s}" for s in ("_bucket", "_sum", "_count")}
            else:
                exported.add(family.name)
    assert exported >= SERIES, sorted(SERIES - exported)


def test_grafana_provisioning() -> None:
    uid = _datasource_uid()
    datasources = DATASOURCES.read_text()
    assert "type: prometheus" in datasources
    assert "url: http://prometheus:9090" in datasources
    assert re.fullmatch(r"[\w-]+", uid), uid
    providers = DASHBOARD_PROVIDERS.read_text()
    assert "path: /etc/grafana/dashboards" in providers


def test_dashboard_queries_use_known_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    uid = _datasource_uid()
    used: set[str] = set()
    ids = []
    for panel in _panels(dashboard["panels"]):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, title
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), title
        assert panel["targets"], f"{title}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == uid, title
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), (title, expr)
            names = promql_metric_names(expr)
            assert names, (title, expr)
            unknown = names - SERIES - PROMETHEUS_OWN
            assert not unknown, f"{title}: {expr} selects unknown series {sorted(unknown)}"
            used |= names
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert used >= DASHBOARD_MUST_USE, sorted(DASHBOARD_MUST_USE - used)


def test_dashboard_buckets_only_in_quantiles() -> None:
    """A histogram's buckets mean something only through histogram_quantile."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            if "_bucket" in target["expr"]:
                assert "histogram_quantile(" in target["expr"], (panel["title"], target["expr"])
