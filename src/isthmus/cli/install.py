"""``isthmus install``, ``isthmus uninstall`` and ``isthmus inject``: manifests for ``kubectl apply -f -``.

As in the Linkerd walkthrough:

    isthmus install --crds | kubectl --context=west apply -f -
    isthmus install --identity-trust-anchors-file root.crt \\
        --identity-issuer-certificate-file issuer.crt --identity-issuer-key-file issuer.key \\
        | kubectl --context=west apply -f -
    isthmus inject < app.yml | kubectl --context=west apply -f -
    isthmus uninstall | kubectl --context=west delete -f -

Promises: the commands only print (they never talk to a cluster); stdout
carries the manifests and nothing else, so a failed command prints nothing
for kubectl to apply: every check (files readable, PEM, the key matching the
issuer certificate, the issuer a CA valid now and signed by a trust anchor,
options well formed) is made before anything is printed, and a failure is
one line ``error: <file>: <problem>`` on stderr with exit status 1. Notes
(a generated trust anchor, what ``inject`` did to each object) go to stderr.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from isthmus import __version__
from isthmus.adapters import x509 as certs
from isthmus.adapters.x509 import Credentials, X509Error
from isthmus.core.inject import AnnotateError, annotate
from isthmus.core.names import validate_dns1123_subdomain
from isthmus.resources import manifests
from isthmus.resources.manifests import InstallValues

__all__ = ["inject_cmd", "install_cmd", "uninstall_cmd"]

WEBHOOK_CA_NAME = "isthmus-proxy-injector-webhook-ca"
WEBHOOK_CERT_LIFETIME = timedelta(days=365)
LOG_LEVELS = ("debug", "info", "warning", "error")


class InstallError(Exception):
    """Input install refuses; the message names the file or option and the problem."""


def _fail(message: object) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _now() -> datetime:
    return datetime.now(UTC)


def _read(path: Path, option: str | None = None) -> bytes:
    given = f" (given with {option})" if option else ""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InstallError(f"{path} does not exist{given}") from None
    except IsADirectoryError:
        raise InstallError(f"{path} is a directory, not a file{given}") from None
    except OSError as e:
        raise InstallError(f"cannot read {path}{given}: {e.strerror or e}") from None


@dataclass(frozen=True)
class Identity:
    anchors_pem: bytes
    issuer: Credentials


def check_identity_files(anchors: Path, issuer_crt: Path, issuer_key: Path, *, now: datetime) -> Identity:
    """The three files, checked as a trust anchor bundle and an issuer that chains to it.

    `InstallError` naming the file: not readable, not PEM, a trust anchor or
    issuer that is not a CA valid at `now`, a key that is not the issuer
    certificate's, an issuer not signed by any of the anchors.
    """
    anchors_pem = _read(anchors, "--identity-trust-anchors-file")
    crt_pem = _read(issuer_crt, "--identity-issuer-certificate-file")
    key_pem = _read(issuer_key, "--identity-issuer-key-file")
    try:
        roots = certs.load_certificates(anchors_pem, what=str(anchors))
        for root in roots:
            certs.check_ca(root, now=now, what=f"{anchors}: the trust anchor")
        issuer = certs.load_certificates(crt_pem, what=str(issuer_crt))[0]
        certs.load_private_key(key_pem, what=str(issuer_key))
    except X509Error as e:
        raise InstallError(str(e)) from None
    try:
        certs.load_credentials(crt_pem, key_pem, what="the issuer")
    except X509Error:
        subject = certs.describe(issuer)["subject"] or "its subject is empty"
        raise InstallError(f"{issuer_key} does not match {issuer_crt}: it is not the private key of "
                           f"the issuer certificate ({subject}); give the key that was created "
                           f"with it") from None
    try:
        certs.check_ca(issuer, now=now, what=f"{issuer_crt}: the issuer")
    except X509Error as e:
        raise InstallError(str(e)) from None
    try:
        certs.verify_ca_chain(crt_pem, roots_pem=anchors_pem, now=now)
    except X509Error as e:
        raise InstallError(f"{issuer_crt} does not chain to the trust anchors in {anchors}: {e}; "
                           f"create the issuer with `isthmus certs create issuer --ca {anchors} "
                           f"--ca-key ...`") from None
    return Identity(anchors_pem, Credentials(crt_pem, key_pem))


def _check_options(trust_domain: str, cluster_domain: str, image: str, proxy_log_level: str) -> None:
    for option, value in (("--identity-trust-domain", trust_domain), ("--cluster-domain", cluster_domain)):
        problems = validate_dns1123_subdomain(value)
        if problems:
            raise InstallError(f"{option} {value!r} is not a DNS domain: {'; '.join(problems)}")
    if not image or any(c.isspace() for c in image):
        raise InstallError(f"--image {image!r} is not an image reference (like {manifests.default_image(__version__)})")
    if proxy_log_level not in LOG_LEVELS:
        raise InstallError(f"--proxy-log-level {proxy_log_level!r} is not one of {', '.join(LOG_LEVELS)}")


def webhook_credentials(*, now: datetime) -> tuple[Credentials, Credentials]:
    """A CA for the webhook's caBundle and the injector's serving certificate from it (new every run)."""
    ca = certs.new_root(now=now, common_name=WEBHOOK_CA_NAME)
    leaf = certs.issue_leaf(ca, manifests.injector_dns_name(), now=now, lifetime=WEBHOOK_CERT_LIFETIME)
    return ca, leaf


def install_cmd(
        crds: Annotated[bool, typer.Option("--crds", help="print only the CustomResourceDefinitions")] = False,
        anchors_file: Annotated[Path | None, typer.Option(
            "--identity-trust-anchors-file", metavar="ROOT.crt", show_default=False,
            help="the trust anchor certificate(s), PEM; shared by clusters that talk to each other")] = None,
        issuer_crt: Annotated[Path | None, typer.Option(
            "--identity-issuer-certificate-file", metavar="ISSUER.crt", show_default=False,
            help="the identity issuer's certificate, PEM, signed by a trust anchor")] = None,
        issuer_key: Annotated[Path | None, typer.Option(
            "--identity-issuer-key-file", metavar="ISSUER.key", show_default=False,
            help="the identity issuer's private key, PEM")] = None,
        trust_domain: Annotated[str, typer.Option("--identity-trust-domain",
                                                  help="the trust domain of workload identities")] = "cluster.local",
        cluster_domain: Annotated[str, typer.Option("--cluster-domain",
                                                    help="the cluster's DNS domain")] = "cluster.local",
        ha: Annotated[bool, typer.Option("--ha", help="run 3 replicas of each control-plane component")] = False,
        image: Annotated[str | None, typer.Option(
            "--image", show_default=False,
            help=f"image of the control plane and the proxy [default: {manifests.default_image(__version__)}]")] = None,
        proxy_log_level: Annotated[str, typer.Option("--proxy-log-level",
                                                     help="log level of injected proxies")] = "info",
) -> None:
    """Print the control plane's manifests (or with --crds its CRDs) for `kubectl apply -f -`.

    Without the three --identity-* files a trust anchor and issuer are
    generated for this install alone.
    """
    files = {"--identity-trust-anchors-file": anchors_file,
             "--identity-issuer-certificate-file": issuer_crt,
             "--identity-issuer-key-file": issuer_key}
    given = [k for k, v in files.items() if v is not None]
    try:
        if crds:
            if given:
                raise InstallError(f"--crds prints only the CRDs; give {', '.join(given)} to "
                                   f"`isthmus install` without --crds")
            print(manifests.dump(manifests.crds()), end="")
            return
        image = image if image is not None else manifests.default_image(__version__)
        _check_options(trust_domain, cluster_domain, image, proxy_log_level)
        if given and len(given) < len(files):
            missing = [k for k in files if k not in given]
            raise InstallError(f"{', '.join(missing)} missing: give all three identity files "
                               f"(trust anchors, issuer certificate, issuer key), or none to "
                               f"generate a trust anchor and issuer")
        now = _now()
        if given:
            assert anchors_file is not None and issuer_crt is not None and issuer_key is not None
            identity = check_identity_files(anchors_file, issuer_crt, issuer_key, now=now)
        else:
            root = certs.new_root(now=now)
            identity = Identity(root.cert_pem, certs.new_issuer(root, now=now))
        ca, leaf = webhook_credentials(now=now)
    except (InstallError, X509Error) as e:
        _fail(e)
        return
    if not given:
        _note("warning: no --identity-trust-anchors-file, --identity-issuer-certificate-file and "
              "--identity-issuer-key-file: generated a trust anchor and issuer for this install only. "
              "Clusters that are meant to talk to each other need a shared trust anchor: create it "
              "with `isthmus certs create root root.crt root.key` and an issuer with `isthmus certs "
              "create issuer issuer.crt issuer.key --ca root.crt --ca-key root.key`, and give them "
              "to every cluster's install.")
    values = InstallValues(
        trust_anchors_pem=identity.anchors_pem.decode(), issuer_cert_pem=identity.issuer.cert_pem.decode(),
        issuer_key_pem=identity.issuer.key_pem.decode(), webhook_ca_pem=ca.cert_pem.decode(),
        webhook_cert_pem=leaf.cert_pem.decode(), webhook_key_pem=leaf.key_pem.decode(),
        image=image, version=__version__, trust_domain=trust_domain, cluster_domain=cluster_domain,
        ha=ha, proxy_log_level=proxy_log_level)
    print(manifests.dump(manifests.control_plane(values)), end="")


def uninstall_cmd() -> None:
    """Print every object `isthmus install` makes, for `kubectl delete -f -`.

    Pods already injected keep their proxies until they are re-created.
    """
    print(manifests.dump(manifests.uninstall_objects()), end="")


def _load(source: str, text: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InstallError(f"{source} is not valid YAML or JSON{where}: {problem}") from None


def inject_cmd(
        files: Annotated[list[str] | None, typer.Argument(
            metavar="[FILE]...", show_default=False,
            help="manifests to read (YAML or JSON, several documents each); - or none: stdin")] = None,
) -> None:
    """Add `isthmus.io/inject: enabled` to the pod templates (and Pods, Namespaces) of manifests.

    Writes the manifests back as YAML on stdout, everything else as it was;
    says on stderr what was done to each object. Apply the result with
    `kubectl apply -f -`: the proxy injector adds the proxies as the pods are
    created.
    """
    docs_out: list[Any] = []
    report: list[str] = []
    try:
        for source in files or ["-"]:
            if source == "-":
                name, text = "stdin", sys.stdin.read()
            else:
                name, text = source, _read(Path(source)).decode(errors="replace")
            docs = [d for d in _load(name, text) if d is not None]
            if not docs:
                raise InstallError(f"{name} holds no manifests; give Kubernetes objects in YAML or JSON")
            for i, doc in enumerate(docs, 1):
                result = annotate(doc, where=f"{name}: document {i}")
                docs_out.append(result.doc)
                report += result.report
    except (InstallError, AnnotateError) as e:
        _fail(e)
        return
    print(manifests.dump(docs_out), end="")
    for line in report:
        _note(line)
