"""The webhook's authenticity check (pure): GitHub/Gitea/Forgejo signatures, GitLab's token."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from reconciler.api.hooks import authentic, signature

SECRET = "It's a Secret to Everybody"


def test_the_signature_is_githubs_documented_example() -> None:
    # From GitHub's "Validating webhook deliveries".
    assert signature(b"Hello, World!", SECRET) == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


@given(st.binary(max_size=2048), st.text(min_size=1, max_size=64))
def test_a_body_signed_with_the_secret_is_authentic(body: bytes, secret: str) -> None:
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert authentic({"x-hub-signature-256": f"sha256={expected}"}, body, secret)


@given(st.binary(max_size=512), st.binary(min_size=1, max_size=8))
def test_a_changed_body_is_not_authentic(body: bytes, extra: bytes) -> None:
    headers = {"x-hub-signature-256": signature(body, SECRET)}
    assert not authentic(headers, body + extra, SECRET)


@given(st.text(max_size=100).map(lambda text: text.encode("utf-8").decode("latin-1")))
def test_any_other_header_value_is_not_authentic(value: str) -> None:
    body = b"{}"
    assert value == signature(body, SECRET) or not authentic(
        {"x-hub-signature-256": value}, body, SECRET
    )
    assert value == SECRET or not authentic({"x-gitlab-token": value}, body, SECRET)


def test_the_gitlab_token_is_the_secret_itself() -> None:
    assert authentic({"x-gitlab-token": SECRET}, b"{}", SECRET)
    assert not authentic({"x-gitlab-token": SECRET.upper()}, b"{}", SECRET)


def test_a_non_ascii_secret_matches_the_bytes_gitlab_sends() -> None:
    secret = "clé secrète"
    sent = secret.encode("utf-8").decode("latin-1")  # how the header arrives
    assert authentic({"x-gitlab-token": sent}, b"{}", secret)


def test_no_header_is_not_authentic() -> None:
    assert not authentic({}, b"{}", SECRET)
