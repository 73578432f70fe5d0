"""Bearer-token identities and RBAC evaluation against the stored Role/ClusterRole objects."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, forbidden
from .store import Store

_RBAC = "rbac.authorization.k8s.io"
ANONYMOUS = "system:anonymous"


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Attributes:
    verb: str
    group: str
    resource: str  # plural, with "/status" for the subresource
    namespace: str | None
    name: str | None


class Authenticator:
    def __init__(self) -> None:
        self._tokens: dict[str, Identity] = {}

    def issue(self, user: str, groups: Sequence[str]) -> str:
        token = secrets.token_urlsafe(24)
        self._tokens[token] = Identity(user, tuple(groups))
        return token

    def identify(self, authorization: str | None) -> Identity | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return self._tokens.get(authorization[7:].strip())


def _subject_matches(subject: dict[str, Any], who: Identity, binding_ns: str | None) -> bool:
    kind = subject.get("kind")
    name = subject.get("name")
    if kind == "User":
        return name == who.user
    if kind == "Group":
        return name in who.groups or (name == "system:authenticated" and who.user != ANONYMOUS)
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return who.user == f"system:serviceaccount:{ns}:{name}"
    return False


def _rule_allows(rule: dict[str, Any], a: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and a.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and a.group not in groups:
        return False
    resources = rule.get("resources") or []
    _, _, sub = a.resource.partition("/")
    wanted = {a.resource, "*", f"*/{sub}"} if sub else {a.resource, "*"}
    if not wanted & set(resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or (a.name is not None and a.name in names)


class Authorizer:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _rules(self, ref: dict[str, Any], namespace: str | None) -> list[dict[str, Any]]:
        if ref.get("kind") == "ClusterRole":
            role = self._store.get((_RBAC, "clusterroles"), "", ref.get("name", ""))
        elif ref.get("kind") == "Role" and namespace:
            role = self._store.get((_RBAC, "roles"), namespace, ref.get("name", ""))
        else:
            role = None
        return list((role or {}).get("rules") or [])

    def allowed(self, who: Identity, a: Attributes) -> bool:
        if "system:masters" in who.groups:
            return True
        if (
            a.group == "authorization.k8s.io"
            and a.resource.startswith("selfsubject")
            and a.verb == "create"
        ):
            return who.user != ANONYMOUS  # the bootstrap role system:basic-user
        for binding in self._store.items((_RBAC, "clusterrolebindings")):
            if any(_subject_matches(s, who, None) for s in binding.get("subjects") or []) and any(
                _rule_allows(r, a) for r in self._rules(binding.get("roleRef") or {}, None)
            ):
                return True
        if a.namespace:
            for binding in self._store.items((_RBAC, "rolebindings"), a.namespace):
                if any(
                    _subject_matches(s, who, a.namespace) for s in binding.get("subjects") or []
                ) and any(
                    _rule_allows(r, a)
                    for r in self._rules(binding.get("roleRef") or {}, a.namespace)
                ):
                    return True
        return False

    def check(self, who: Identity, a: Attributes) -> None:
        if self.allowed(who, a):
            return
        group = a.group
        what = f"{a.resource.split('/')[0]}" + (f".{group}" if group else "")
        subject = f'"{a.name}" ' if a.name else ""
        scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        raise forbidden(
            f'{what} {subject}is forbidden: User "{who.user}" cannot {a.verb} resource "{a.resource}" in API group "{group}" {scope}',
            plural=a.resource.split("/")[0],
            group=group,
            name=a.name or "",
        )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def review(
    authorizer: Authorizer, requester: Identity, body: Any, *, self_review: bool
) -> dict[str, Any]:
    """Answer a (Self)SubjectAccessReview with the same evaluation requests get."""
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        raise ApiError(400, "BadRequest", "an access review needs a spec")
    spec = body["spec"]
    attrs = spec.get("resourceAttributes") or {}
    if self_review:
        who = requester
    else:
        who = Identity(spec.get("user", ""), tuple(spec.get("groups") or ()))
    resource = attrs.get("resource", "")
    if attrs.get("subresource"):
        resource += "/" + attrs["subresource"]
    a = Attributes(
        verb=attrs.get("verb", ""),
        group=attrs.get("group", ""),
        resource=resource,
        namespace=attrs.get("namespace") or None,
        name=attrs.get("name") or None,
    )
    allowed = authorizer.allowed(who, a) if attrs else "system:masters" in who.groups
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": body.get("kind")
        or ("SelfSubjectAccessReview" if self_review else "SubjectAccessReview"),
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": {"allowed": allowed, **({} if allowed else {"reason": "no RBAC rule allows it"})},
    }
