"""Metric labels stay a bounded set whatever workspaces and clients send."""

from __future__ import annotations

import pytest

from agents_pipeline.llm.pricing import OTHER_MODEL, model_label
from gateway.metrics import GatewayMetrics
from omnichat.settings import Settings
from streams.metrics import StreamMetrics


@pytest.mark.parametrize(
    ("model", "label"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("GPT-4o-mini ", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4.1", "gpt-4.1"),
        ("offline", "offline"),
        ("my-finetune-v3", OTHER_MODEL),
        ("gpt-4o-2024-01-01-anything", OTHER_MODEL),
        ("", OTHER_MODEL),
        ("llama-3.1-8b", "llama-3.1-8b"),
        ("LLaMA-3.1-8B", "llama-3.1-8b"),
    ],
)
def test_model_label(model: str, label: str) -> None:
    assert model_label(model, extra={"llama-3.1-8b"}) == label


def test_settings_allow_extra_models_and_the_default_model() -> None:
    s = Settings(_env_file=None, metrics_extra_models=" qwen2 , local-7b,", llm_model="mixtral")  # type: ignore[call-arg]
    assert s.extra_model_labels == frozenset({"qwen2", "local-7b", "mixtral"})
    m = StreamMetrics(extra_models=s.extra_model_labels)
    assert [m.model(x) for x in ("qwen2", "mixtral", "gpt-4o", "tenant-text")] == [
        "qwen2",
        "mixtral",
        "gpt-4o",
        "other",
    ]


def test_unknown_http_methods_share_one_label() -> None:
    metrics = GatewayMetrics()
    for method in ("GET", "FOO1", "FOO2", "BREW"):
        metrics.request_done("unmatched", method, 405, 0.001)
    methods = {
        s.labels["method"]
        for family in metrics.registry.collect()
        if family.name == "omnichat_gateway_requests"
        for s in family.samples
    }
    assert methods == {"GET", "OTHER"}
