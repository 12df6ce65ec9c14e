"""The validation rules a third party meets first: each bad value is refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from hokusai_registry.register import InvalidInput, metadata


@pytest.mark.parametrize(
    ("given", "stored"),
    [("A", "A"), ("abc-123", "ABC-123"), ("X" * 64, "X" * 64), ("A-B-C", "A-B-C"), ("0", "0")],
)
def test_token_id_accepts_and_upper_cases(given: str, stored: str) -> None:
    assert metadata.token_id(given) == stored


@pytest.mark.parametrize("bad", ["", "-A", "A-", "-", "A_B", "A B", "X" * 65, "Ä", "A\n"])
def test_token_id_refuses(bad: str) -> None:
    with pytest.raises(InvalidInput, match="token_id") as caught:
        metadata.token_id(bad)
    assert caught.value.field == "token_id" and caught.value.step == "validate"


@pytest.mark.parametrize(
    ("given", "number", "text"), [(0.85, 0.85, "0.85"), ("1e-3", 0.001, "0.001"), (3, 3.0, "3.0")]
)
def test_baseline_is_a_finite_number_stored_as_text(given: float | str, number: float, text: str) -> None:
    assert metadata.baseline(given) == number
    assert metadata.baseline_text(metadata.baseline(given)) == text


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "abc", "", True, float("nan")])
def test_baseline_refuses(bad: float | str) -> None:
    with pytest.raises(InvalidInput, match="baseline"):
        metadata.baseline(bad)


@pytest.mark.parametrize("bad", ["", "   ", "m" * 251])
def test_metric_refuses(bad: str) -> None:
    with pytest.raises(InvalidInput, match="metric"):
        metadata.metric(bad)


def test_metric_accepts_up_to_250_characters() -> None:
    assert metadata.metric("m" * 250) == "m" * 250


@pytest.mark.parametrize("bad", ["", " ", "a/b", "a:b", ".", "..", "..x", "n" * 257])
def test_model_name_refuses_what_mlflow_refuses(bad: str) -> None:
    with pytest.raises(InvalidInput, match="name"):
        metadata.model_name(bad)


def test_tags_cannot_override_the_metadata_tags() -> None:
    with pytest.raises(InvalidInput, match="hokusai_status"):
        metadata.tags({"hokusai_status": "verified"})
    with pytest.raises(InvalidInput, match="tag key"):
        metadata.tags({"bad\nkey": "v"})
    assert metadata.tags({"team": "acme", "a.b/c": ""}) == {"team": "acme", "a.b/c": ""}


def test_parse_tags_needs_key_and_equals_sign() -> None:
    assert metadata.parse_tags(["a=b", "url=http://x?y=1"]) == {"a": "b", "url": "http://x?y=1"}
    for bad in ["novalue", "=v"]:
        with pytest.raises(InvalidInput, match="KEY=VALUE"):
            metadata.parse_tags([bad])


def test_version_tags_hold_the_metadata_but_not_yet_the_status() -> None:
    meta = metadata.metadata("m", "tok-1", "accuracy", "0.9", {"team": "acme"})
    assert meta.version_tags() == {
        "team": "acme",
        "hokusai_token_id": "TOK-1",
        "benchmark_metric": "accuracy",
        "benchmark_value": "0.9",
    }


def test_model_dir_needs_an_mlmodel_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a directory"):
        metadata.model_dir(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="no MLmodel"):
        metadata.model_dir(tmp_path)
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert metadata.model_dir(tmp_path) == tmp_path


def test_url_and_key_are_required() -> None:
    with pytest.raises(InvalidInput, match="api_key"):
        metadata.api_key("  ")
    with pytest.raises(InvalidInput, match="url"):
        metadata.url(None)
    with pytest.raises(InvalidInput, match="url"):
        metadata.url("ftp://host")
    assert metadata.url("https://registry.example.com/") == "https://registry.example.com"
