"""Service-account tokens: JWTs the cluster signs (ES256) and anyone can check through TokenReview.

Claims follow Kubernetes' bound service-account tokens: `iss`, `sub`
(`system:serviceaccount:NS:NAME`), `aud`, `iat`, `nbf`, `exp` and
`kubernetes.io: {namespace, serviceaccount: {name, uid}, pod?}`. A token is
valid while its signature, lifetime and audience check out and the service
account it names still exists with the same uid. Token text is never logged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from isthmus.core.rbac import User

DEFAULT_AUDIENCE = "https://kubernetes.default.svc"


class TokenInvalid(Exception):
    pass


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires: dt.datetime


class TokenIssuer:
    def __init__(self, *, signing_key_pem: bytes, issuer: str,
                 clock: Callable[[], dt.datetime],
                 lookup_sa: Callable[[str, str], dict[str, Any] | None]) -> None:
        key = serialization.load_pem_private_key(signing_key_pem, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key
        self._public = key.public_key()
        self._issuer = issuer
        self._clock = clock
        self._lookup_sa = lookup_sa

    def issue(self, namespace: str, sa: dict[str, Any], *, seconds: int = 3600,
              audiences: list[str] | None = None, pod: dict[str, str] | None = None) -> IssuedToken:
        now = self._clock()
        exp = now + dt.timedelta(seconds=seconds)
        name = sa["metadata"]["name"]
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": audiences or [DEFAULT_AUDIENCE],
            "iat": int(now.timestamp()), "nbf": int(now.timestamp()), "exp": int(exp.timestamp()),
            "kubernetes.io": {"namespace": namespace,
                              "serviceaccount": {"name": name, "uid": sa["metadata"].get("uid", "")}},
        }
        if pod:
            claims["kubernetes.io"]["pod"] = pod
        return IssuedToken(jwt.encode(claims, self._key, algorithm="ES256"), exp)

    def verify(self, token: str, audiences: list[str] | None = None) -> tuple[User, list[str]]:
        """The user the token proves and the audiences it was accepted for; raises TokenInvalid."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256":
                raise TokenInvalid("token is not signed with ES256")
            claims = jwt.decode(token, self._public, algorithms=["ES256"], issuer=self._issuer,
                                options={"verify_aud": False, "require": ["exp", "sub", "iss"]},
                                leeway=0)
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("token has expired") from None
        except jwt.InvalidTokenError as e:
            raise TokenInvalid(f"invalid bearer token: {e}") from None
        aud = claims.get("aud") or []
        aud = [aud] if isinstance(aud, str) else list(aud)
        wanted = audiences or [DEFAULT_AUDIENCE]
        accepted = [a for a in wanted if a in aud]
        if not accepted:
            raise TokenInvalid("token audiences " + ", ".join(aud) + " do not match " + ", ".join(wanted))
        k8s = claims.get("kubernetes.io") or {}
        ns = k8s.get("namespace", "")
        sa_claim = k8s.get("serviceaccount") or {}
        name = sa_claim.get("name", "")
        if claims.get("sub") != f"system:serviceaccount:{ns}:{name}":
            raise TokenInvalid("token subject does not match its service account")
        sa = self._lookup_sa(ns, name)
        if sa is None:
            raise TokenInvalid(f'service account "{ns}/{name}" no longer exists')
        uid = sa["metadata"].get("uid", "")
        if sa_claim.get("uid") and sa_claim["uid"] != uid:
            raise TokenInvalid(f'service account "{ns}/{name}" was recreated; the token is for the old one')
        user = User(name=f"system:serviceaccount:{ns}:{name}", uid=uid,
                    groups=("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"))
        return user, accepted

    def public_key_pem(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
