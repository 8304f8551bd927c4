"""Which revision the daemon may apply, when only commits signed by an allowed key may run.

As Flux verifies the head commit of what it pulls, a new branch head is applied only if its
commit is signed by a key of the allowed-signers file. A head that is not keeps the last
verified revision running, and why is kept for `GET /api/sync`, the metrics and the log.

At first start nothing is verified yet: the newest verified commit of the head's first-parent
history (within SEARCH_DEPTH commits) runs instead, so a restart while an unsigned commit is the
head keeps running what ran before it. With none, nothing runs: no task of an unverified commit
is ever scheduled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler.allowedsigners import AllowedSignersError, lists_key
from reconciler.signatures import CommitVerifier, SigningKey, load_allowed_signers

log = logging.getLogger("reconciler.trust")

SEARCH_DEPTH = 100


@dataclass(frozen=True, slots=True)
class TrustState:
    """The last verified revision (and its signer), and the head refused now with the reason;
    `refusals` counts every head refused since start."""

    verified_revision: str | None = None
    signed_by: str | None = None
    refused_revision: str | None = None
    reason: str | None = None
    refusals: int = 0


class HeadTrust:
    """Decides, per branch head, the revision to apply. Blocking (it runs git); called by one
    reconcile at a time. `state` may be read from any thread: it is replaced, never changed."""

    def __init__(self, verifier: CommitVerifier, *, signs_own_commits: bool) -> None:
        self._verifier = verifier
        self.signs_own_commits = signs_own_commits
        self.state = TrustState()

    def admit(self, head: str | None, *, recheck: bool = False) -> str | None:
        """The revision to apply for branch head `head`: `head` itself when its commit is signed
        by an allowed signer, else the last verified revision (None: nothing runs).

        A head refused before is checked again only when `recheck` (the periodic full resync,
        which picks up an allowed-signers file edited since)."""
        state = self.state
        if head is None or head == state.verified_revision:
            self.state = replace(state, refused_revision=None, reason=None)
            return head
        if head == state.refused_revision and not recheck:
            return state.verified_revision
        [verdict] = self._verifier.verdicts(head)
        if verdict.trusted:
            log.info("commit %s is signed by %s: applying it", head[:12], verdict.signer)
            self.state = replace(
                state,
                verified_revision=head,
                signed_by=verdict.signer,
                refused_revision=None,
                reason=None,
            )
            return head
        return self._refuse(head, verdict.reason, state)

    def _refuse(self, head: str, reason: str | None, state: TrustState) -> str | None:
        """Keep the verified revision (at first start: look for one below `head`); log a
        refusal once, not at every resync that checks the same head again."""
        known = head == state.refused_revision and reason == state.reason
        if head != state.refused_revision:
            state = replace(state, refusals=state.refusals + 1)
        if state.verified_revision is None:
            state = self._newest_verified_below(head, state)
        self.state = replace(state, refused_revision=head, reason=reason)
        if not known:
            _log_refusal(head, reason, state.verified_revision)
        return state.verified_revision

    def _newest_verified_below(self, head: str, state: TrustState) -> TrustState:
        for verdict in self._verifier.verdicts(head, skip=1, limit=SEARCH_DEPTH):
            if verdict.trusted:
                return replace(state, verified_revision=verdict.revision, signed_by=verdict.signer)
        return state

    def distrust(self, revision: str) -> str | None:
        """Why nothing of ours may be built on `revision` (a remote's head we would replay our
        commits onto and sign), or None when its commit is signed by an allowed key. Blocking;
        safe from any thread (it changes nothing)."""
        if revision == self.state.verified_revision:
            return None
        [verdict] = self._verifier.verdicts(revision)
        return None if verdict.trusted else verdict.reason or "its signature is not trusted"

    def write_refusal(self) -> str | None:
        """Why an API write must not be committed now, or None.

        The API commits on top of the applied revision: while the head is refused it cannot
        (committing on top of the head would sign what nobody trusted), and a daemon that
        cannot sign would make a head that it refuses itself.
        """
        if not self.signs_own_commits:
            return (
                "Nothing was written: this daemon applies only signed commits (--allowed-signers)"
                " and has no --signing-key to sign its own."
            )
        refused = self.state.refused_revision
        if refused is not None:
            return (
                f"Nothing was written: the branch head {refused[:12]} is not signed by an allowed"
                " key, so it is not applied and nothing can be committed on top of it; sign it"
                " (or commit a signed fix) first."
            )
        return None


def _log_refusal(head: str, reason: str | None, running: str | None) -> None:
    if running is None:
        log.warning(
            "commit %s is not applied: %s; no commit of the branch is verified, so nothing runs:"
            " no task is scheduled until a commit signed by an allowed key is the head",
            head[:12],
            reason,
        )
    else:
        log.warning(
            "commit %s is not applied: %s; the verified revision %s keeps running",
            head[:12],
            reason,
            running[:12],
        )


def open_trust(root: Path, allowed_signers: Path, signing_key: SigningKey | None) -> HeadTrust:
    """The trust of a daemon verifying against `allowed_signers`; a signing key it would refuse
    its own commits from is a start-up error."""
    path, signers = load_allowed_signers(allowed_signers)
    if (
        signing_key is not None
        and not any(signer.cert_authority for signer in signers)
        and not lists_key(signers, signing_key.key_type, signing_key.public_key)
    ):
        raise AllowedSignersError(
            f"{allowed_signers}: does not list the public key of --signing-key"
            f" {signing_key.path}, so this daemon would refuse its own API commits; add a line"
            f" `PRINCIPAL {signing_key.key_type} {signing_key.public_key}`"
        )
    return HeadTrust(CommitVerifier(root, path), signs_own_commits=signing_key is not None)
