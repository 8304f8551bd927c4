"""Whether a webhook delivery comes from the git server: pure checks of its headers and body.

GitHub, Gitea and Forgejo sign the raw body (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`);
GitLab sends the shared secret itself (`X-Gitlab-Token`). Both are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SIGNATURE_HEADER = "x-hub-signature-256"
GITLAB_TOKEN_HEADER = "x-gitlab-token"  # noqa: S105 (a header name, not a secret)


def signature(body: bytes, secret: str) -> str:
    """The `X-Hub-Signature-256` value of `body` under `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def authentic(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether the delivery carries a valid signature of `body` or the GitLab token.

    `headers` is keyed in lower case (as Starlette's are) and decoded as Latin-1, HTTP's own
    header encoding, so encoding a value back gives exactly the bytes that were sent.
    """
    signed = headers.get(SIGNATURE_HEADER)
    if signed is not None:
        return hmac.compare_digest(signed.encode("latin-1"), signature(body, secret).encode())
    token = headers.get(GITLAB_TOKEN_HEADER)
    if token is not None:
        return hmac.compare_digest(token.encode("latin-1"), secret.encode())
    return False
