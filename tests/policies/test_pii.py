"""PII and secret guards on the labelled corpus, and every mode."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tako.core.errors import PolicyDenied
from tako.policies.pii import PiiFilter, mask
from tako.policies.pii_stream import StreamRedactor
from tako.policies.settings import ALL_PII_KINDS, PiiFilterSettings, PiiSettings
from tests.support.pii_corpus import NEGATIVES, POSITIVES, sample_id


def guard(mode: str = "redact", **kwargs: Any) -> PiiFilter:
    return PiiFilter(PiiFilterSettings(mode=mode, **kwargs))  # type: ignore[arg-type]


def test_corpus_covers_every_kind_and_has_negatives() -> None:
    kinds = {e["kind"] for r in POSITIVES for e in r["expected"]}
    assert kinds == set(ALL_PII_KINDS)
    assert len(NEGATIVES) >= 30


@pytest.mark.parametrize("record", POSITIVES, ids=sample_id)
def test_positive_samples_are_found_exactly(record: dict[str, Any]) -> None:
    text = record["text"]
    found = [{"kind": f.kind, "value": text[f.start:f.end]} for f in guard().scan(text)]
    assert found == record["expected"]


@pytest.mark.parametrize("record", NEGATIVES, ids=sample_id)
def test_negative_samples_are_left_alone(record: dict[str, Any]) -> None:
    g = guard()
    assert g.scan(record["text"]) == []
    assert g.apply(record["text"]) == record["text"]


def test_redact_mode() -> None:
    text = "Mail jane@corp.example, card 4111111111111111, key AKIAIOSFODNN7EXAMPLE."
    assert guard("redact").apply(text) == (
        "Mail <EMAIL>, card <CREDIT_CARD>, key <AWS_ACCESS_KEY_ID>."
    )


@pytest.mark.parametrize(
    ("kind", "value", "masked"),
    [
        ("email", "john.doe@example.com", "j***@e***.com"),
        ("credit_card", "4111 1111 1111 1111", "****1111"),
        ("us_ssn", "123-45-6789", "***-**-6789"),
        ("iban", "DE89 3704 0044 0532 0130 00", "DE****3000"),
        ("phone", "+44 20 7946 0958", "+** ** **** **58"),
        ("ipv4", "192.168.10.25", "192.*.*.*"),
        ("ipv6", "2001:db8::1", "2001:****"),
        ("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE", "AKIA****"),
        ("aws_secret_access_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "****"),
        ("openai_api_key", "sk-proj-Xy7_Qm2LpZ9aB4cD6eF8gH0iJ1kL3m", "sk-proj-****"),
        ("github_token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_****"),
        ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "eyJ****"),
        (
            "private_key",
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----",
            "-----BEGIN EC PRIVATE KEY-----\n****\n-----END EC PRIVATE KEY-----",
        ),
    ],
)
def test_mask_of_each_kind(kind: str, value: str, masked: str) -> None:
    assert mask(kind, value) == masked


def test_mask_mode_applies_in_place() -> None:
    text = "Reach john.doe@example.com or pay with 4111-1111-1111-1111 today"
    assert guard("mask").apply(text) == "Reach j***@e***.com or pay with ****1111 today"


def test_hash_mode_is_stable_distinct_and_salted() -> None:
    text = "from a@example.com to b@example.com and again a@example.com"
    out = guard("hash").apply(text)
    tags = re.findall(r"<EMAIL:([0-9a-f]{8})>", out)
    assert len(tags) == 3 and tags[0] == tags[2] != tags[1]
    assert "example.com" not in out
    assert guard("hash").apply("a@example.com") == f"<EMAIL:{tags[0]}>"
    assert guard("hash", hash_salt="pepper").apply("a@example.com") != f"<EMAIL:{tags[0]}>"


def test_block_mode_names_kinds_never_values() -> None:
    secret = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    g = PiiFilter(PiiFilterSettings(mode="block"), direction="response")
    with pytest.raises(PolicyDenied) as info:
        g.apply(f"token {secret} for jane@corp.example")
    err = info.value
    assert err.status == 403 and err.code == "policy_denied"
    assert err.details == {"direction": "response", "kinds": ["email", "github_token"]}
    assert "response" in err.message and "email" in err.message
    assert secret not in str(err.to_body()) and "jane@" not in str(err.to_body())
    assert g.apply("nothing sensitive here") == "nothing sensitive here"


def test_kinds_are_configurable() -> None:
    g = guard("redact", kinds=["email"])
    assert g.apply("a@example.com 4111111111111111") == "<EMAIL> 4111111111111111"
    assert [f.kind for f in g.scan("a@example.com 4111111111111111")] == ["email"]


def test_off_mode_changes_nothing_but_still_scans() -> None:
    g = guard("off")
    text = "a@example.com"
    assert g.apply(text) == text
    assert g.apply_messages([{"role": "user", "content": text}])[0]["content"] == text
    assert [f.kind for f in g.scan(text)] == ["email"]
    stream = StreamRedactor(g)
    assert stream.feed("a@exam") + stream.feed("ple.com") + stream.flush() == text


def test_directions_from_settings() -> None:
    settings = PiiSettings(
        request=PiiFilterSettings(mode="redact", kinds=["email"]),
        response=PiiFilterSettings(mode="mask"),
    )
    request, response = PiiFilter.for_request(settings), PiiFilter.for_response(settings)
    assert request.apply("a@example.com 10.0.0.1") == "<EMAIL> 10.0.0.1"
    assert response.apply("a@example.com 10.0.0.1") == "a***@e***.com 10.*.*.*"
    assert response.direction == "response"


def test_apply_messages_rewrites_text_and_text_parts_only() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Support for acme."},
        {"role": "user", "content": "I am jane@corp.example", "name": "jane"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "card 4111 1111 1111 1111"},
                {"type": "image_url", "image_url": {"url": "https://x.example/a@b.com.png"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ip 10.1.2.3"},
    ]
    before = repr(messages)
    out = guard("redact").apply_messages(messages)
    assert repr(messages) == before  # the input is left as it was
    assert out[0] == messages[0]
    assert out[1] == {"role": "user", "content": "I am <EMAIL>", "name": "jane"}
    assert out[2]["content"][0] == {"type": "text", "text": "card <CREDIT_CARD>"}
    assert out[2]["content"][1] == messages[2]["content"][1]
    assert out[3] == messages[3]
    assert out[4]["content"] == "ip <IPV4>"


def test_apply_messages_blocks() -> None:
    with pytest.raises(PolicyDenied, match="us_ssn"):
        guard("block").apply_messages([{"role": "user", "content": "ssn 123-45-6789"}])


def test_unterminated_private_key_is_redacted_to_the_end() -> None:
    text = "key:\n-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBtH4aWdG7d3"
    assert guard("redact").apply(text) == "key:\n<PRIVATE_KEY>"


def test_public_certificate_is_not_a_private_key() -> None:
    text = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ4\n-----END CERTIFICATE-----"
    assert guard("redact").apply(text) == text
