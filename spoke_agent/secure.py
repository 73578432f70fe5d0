"""A secure round's stages on the cluster: the client secrets, the shares, the reveal.

The client secrets of one round attempt live in a Secret in the agent namespace, named
from the round (`naming.secagg_secret_name`), created once and read back after a restart,
owned by the round-spec ConfigMap (gone with the job) and deleted once the reveal is
reported. The agent itself advertises the public keys and encrypts the shares (in-cluster
work, no training data involved); the training Job masks the update with the secrets it
mounts, so the clear update never leaves the Job. Before revealing, the agent records the
survivors and dropped clusters it reveals for in a second Secret, created once: a hub that
asks again with other sets (after a restart, or lying) is refused, so no cluster ever has
both its self-mask and its key revealed.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import ModelRef, RoundReport, RoundSpec, RoundState, SecAggReport
from fl_contract.secagg import SecAggFormatError, decode_bundle, encode_bundle
from fl_core.privacy import secagg
from fl_core.privacy.secagg_round import context, encode_keys, neighbour_keys, params_of
from fl_core.store import ModelStore, StoreError, open_round_store
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.controller import TemporaryError
from fl_kube.errors import Conflict

log = logging.getLogger(__name__)


MAX_FORGOTTEN = 4096


class SecAggRefused(Exception):
    """The stage cannot be done as asked; `reason` (CamelCase) goes into the report."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SecureStages:
    """The agent's part of the stages for one cluster (its namespace, its store access)."""

    def __init__(self, spoke: KubeApi, *, namespace: str, file_root: Path | None) -> None:
        self._spoke = spoke
        self._ns = namespace
        self._file_root = file_root
        self._forgotten: set[tuple[str, int, int]] = set()  # in this process, bounded below

    # -- the per-round Secret ------------------------------------------------------------

    async def secrets(self, spec: RoundSpec, cm: dict[str, Any]) -> secagg.ClientSecrets:
        """This round attempt's client secrets: read back, or generated and stored once."""
        name = naming.secagg_secret_name(spec.job.uid, spec.round, spec.attempt)
        found = await self._spoke.get_or_none(r.SECRET, name, namespace=self._ns)
        if found is None:
            created = secagg.ClientSecrets.generate()
            body = self._secret_body(spec, cm, name, {keys.SECAGG_SECRETS_KEY: created.to_bytes()})
            try:
                await self._spoke.create(r.SECRET, body, namespace=self._ns)
                log.info("created the secure-aggregation secrets %s", name)
                return created
            except Conflict as exc:
                if not exc.already_exists:
                    raise
                found = await self._spoke.get(r.SECRET, name, namespace=self._ns)
        data = (found.get("data") or {}).get(keys.SECAGG_SECRETS_KEY)
        if not data:
            raise SecAggRefused("SecAggSecretsLost", f"Secret {self._ns}/{name} holds no secrets")
        return secagg.ClientSecrets.from_bytes(base64.b64decode(data))

    async def forget(self, spec: RoundSpec) -> None:
        """Delete the round attempt's secrets (revealed, failed, or given up); once per
        process (after a restart, once more)."""
        slot = (spec.job.uid, spec.round, spec.attempt)
        if slot in self._forgotten:
            return
        for name in (
            naming.secagg_secret_name(spec.job.uid, spec.round, spec.attempt),
            naming.secagg_reveal_record_name(spec.job.uid, spec.round, spec.attempt),
        ):
            if await self._spoke.delete(r.SECRET, name, namespace=self._ns):
                log.info("deleted the secure-aggregation secret %s", name)
        if len(self._forgotten) >= MAX_FORGOTTEN:
            self._forgotten.clear()
        self._forgotten.add(slot)

    async def forget_earlier_attempt(self, spec: RoundSpec) -> None:
        """A retried round leaves the secrets of its attempt before behind: delete them."""
        if spec.attempt > 1:
            earlier = spec.model_copy(update={"attempt": spec.attempt - 1})
            await self.forget(earlier)

    def _secret_body(
        self, spec: RoundSpec, cm: dict[str, Any], name: str, data: dict[str, bytes]
    ) -> dict[str, Any]:
        meta = cm["metadata"]
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": self._ns,
                "labels": {
                    keys.LABEL_COMPONENT: keys.COMPONENT_SECAGG,
                    keys.LABEL_MANAGED_BY: keys.AGENT_FIELD_MANAGER,
                    keys.LABEL_PART_OF: keys.ADDON_NAME,
                    keys.LABEL_ROUND: str(spec.round),
                    keys.LABEL_JOB_UID: spec.job.uid,
                },
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }

    # -- the stages ----------------------------------------------------------------------

    def keys_report(self, spec: RoundSpec, secrets: secagg.ClientSecrets) -> SecAggReport:
        return SecAggReport(stage="keys", public_keys=encode_keys(secrets.public_keys()))

    async def share(
        self, spec: RoundSpec, secrets: secagg.ClientSecrets, current: SecAggReport
    ) -> SecAggReport:
        """Encrypt this cluster's secret shares for its neighbours and upload the bundle."""
        secure = spec.secure_aggregation
        assert secure is not None
        shares = secagg.share_keys(
            spec.cluster, secrets, params_of(secure.params), neighbour_keys(secure), _context(spec)
        )
        ref = await self._put(spec, secure.shares_uri, encode_bundle(shares))
        return current.model_copy(update={"stage": "shares", "shares": ref})

    async def reveal(
        self,
        spec: RoundSpec,
        cm: dict[str, Any],
        secrets: secagg.ClientSecrets,
        current: SecAggReport,
    ) -> SecAggReport:
        """Reveal, for the survivors, the self-mask shares, and for the dropped, the key
        shares this cluster holds; once per round attempt and never both for one cluster."""
        secure = spec.secure_aggregation
        assert secure is not None
        survivors, dropped = sorted(secure.survivors), sorted(secure.dropped)
        if spec.cluster not in survivors:
            raise SecAggRefused("SecAggRevealRefused", "asked to reveal, but not a survivor")
        if len(survivors) < secure.params.threshold:
            # A sum of so few inputs is too close to one input: no reveal for it.
            raise SecAggRefused(
                "SecAggRevealRefused",
                f"asked to reveal for {len(survivors)} survivors, fewer than the threshold "
                f"{secure.params.threshold}",
            )
        both = set(survivors) & set(dropped)
        if both:
            raise SecAggRefused(
                "SecAggRevealRefused",
                f"{', '.join(sorted(both))} named both a survivor and dropped: refused",
            )
        await self._record_reveal(spec, cm, survivors, dropped)
        received: dict[str, bytes] = {}
        if secure.inbox is not None:
            store = self._store(spec)
            try:
                data = await store.get(secure.inbox.uri, sha256=secure.inbox.sha256)
            except StoreError as exc:
                raise TemporaryError(f"cannot read the inbox {secure.inbox.uri}: {exc}") from None
            finally:
                await store.close()
            try:
                received = decode_bundle(data)
            except SecAggFormatError as exc:
                raise SecAggRefused("SecAggInvalidShares", str(exc)) from None
        revealed = secagg.reveal(
            spec.cluster,
            secrets,
            received,
            survivors,
            dropped,
            neighbour_keys(secure),
            _context(spec),
        )
        ref = await self._put(spec, secure.revealed_uri, encode_bundle(revealed))
        return current.model_copy(update={"stage": "reveal", "revealed": ref})

    async def _record_reveal(
        self, spec: RoundSpec, cm: dict[str, Any], survivors: list[str], dropped: list[str]
    ) -> None:
        """Create the write-once record of this attempt's reveal, or check it is the same."""
        name = naming.secagg_reveal_record_name(spec.job.uid, spec.round, spec.attempt)
        record = json.dumps({"survivors": survivors, "dropped": dropped}, sort_keys=True).encode()
        body = self._secret_body(spec, cm, name, {keys.SECAGG_REVEALED_KEY: record})
        try:
            await self._spoke.create(r.SECRET, body, namespace=self._ns)
            return
        except Conflict as exc:
            if not exc.already_exists:
                raise
        found = await self._spoke.get(r.SECRET, name, namespace=self._ns)
        earlier = base64.b64decode((found.get("data") or {}).get(keys.SECAGG_REVEALED_KEY, ""))
        if earlier != record:
            raise SecAggRefused(
                "SecAggRevealRefused",
                "asked to reveal for other survivors and dropped clusters than before in this "
                "round attempt: refused",
            )

    def _store(self, spec: RoundSpec) -> ModelStore:
        return open_round_store(spec, file_root=self._file_root)

    async def _put(self, spec: RoundSpec, uri: str, data: bytes) -> ModelRef:
        store = self._store(spec)
        try:
            written = await store.put_uri(uri, data)
        except StoreError as exc:
            raise TemporaryError(f"cannot write {uri}: {exc}") from None
        finally:
            await store.close()
        return ModelRef(uri=written.uri, sha256=written.sha256)


def secure_report(
    spec: RoundSpec, *, state: RoundState, secure: SecAggReport, **fields: Any
) -> RoundReport:
    return RoundReport(
        job_uid=spec.job.uid,
        cluster=spec.cluster,
        round=spec.round,
        attempt=spec.attempt,
        state=state,
        secure_aggregation=secure,
        **fields,
    )


def _context(spec: RoundSpec) -> bytes:
    return context(spec.job.uid, spec.round, spec.attempt)
