"""The credential sources of the three clouds, each through the cloud's own library (an extra).

Every factory returns a `credentials.Source` whose fetch runs in a thread. A fetch that fails
raises `CredentialFailed` naming what failed (a token exchange, a metadata server), never with
the library's message, which can quote a token or a signed assertion.

- aws: botocore's default chain (environment, shared config and profile, IRSA web identity
  through STS, honouring `AWS_ENDPOINT_URL_STS`, EKS Pod Identity / container credentials, IMDS).
  The value is botocore's frozen credentials, for SigV4.
- gcp: a service-account JSON (inline, `env:NAME`, `file:/path`) or Application Default
  Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the GKE/GCE metadata server). The value is an
  OAuth access token, kept until 5 minutes before it expires.
- azure: with `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID` and `AZURE_TENANT_ID` (AKS workload
  identity) a client-assertion exchange whose assertion is the token file read at every exchange
  (the kubelet rotates it; azure-identity's own workload credential keeps it for ten minutes);
  otherwise `DefaultAzureCredential`. The value is an Entra access token for Azure OpenAI.

The libraries call their metadata and credential services themselves (IMDS at 169.254.169.254,
EKS Pod Identity at 169.254.170.23, the GKE metadata server), not through the gateway's HTTP
client, so the gateway's refusal of link-local addresses does not apply to them, on purpose: that
guard keeps a registered provider URL away from these services; here the pod's own environment
names them, as the identity the platform gave it.
"""

from __future__ import annotations

import calendar
import os
from urllib.parse import urlsplit

import orjson

from proxy.net.httpclient import host_header
from proxy.providers.credentials import CredentialFailed, Source, read_spec

GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_MARGIN = 300.0
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
# Entra's public clouds: MSAL knows them; any other authority host skips the discovery call to them.
_ENTRA_HOSTS = frozenset({"login.microsoftonline.com", "login.chinacloudapi.cn", "login.microsoftonline.us"})
_AWS_SOURCES = {
    "assume-role-with-web-identity": "web identity token exchange",
    "container-role": "container credentials request (EKS Pod Identity)",
    "iam-role": "instance metadata (IMDS) credentials request",
    "assume-role": "role assumption",
    "sso": "SSO token exchange",
}


# -- aws ----------------------------------------------------------------------------------------
def aws_source() -> Source:
    state: dict = {}

    def fetch(force: bool):
        import botocore.session

        if force or "session" not in state:  # a new session re-resolves the chain from scratch
            state["session"] = botocore.session.Session()
        try:
            found = state["session"].get_credentials()
        except Exception as exc:  # a source that fetches at once (container, IMDS) failed: named by botocore
            said = getattr(exc, "kwargs", None)  # botocore's errors keep their fields here
            what = _AWS_SOURCES.get(said.get("provider") if isinstance(said, dict) else None,
                                    "AWS credential resolution")
            raise CredentialFailed(f"{what} failed") from None
        if found is None:
            raise CredentialFailed("no AWS credentials were found (environment, profile, web identity, "
                                   "container credentials or instance metadata)")
        try:
            frozen = found.get_frozen_credentials()  # a refreshable chain refreshes here, if due
        except Exception:
            what = _AWS_SOURCES.get(getattr(found, "method", ""), "AWS credential refresh")
            raise CredentialFailed(f"{what} failed") from None
        expiry = getattr(found, "_expiry_time", None)  # None for static keys
        return frozen, expiry.timestamp() if expiry is not None else None

    return Source(fetch)


def sigv4(upstream_request, frozen, service: str, region: str) -> None:
    """Sign the final request (method, URL, body and the headers it has so far) in place. The host
    signed is the Host header the client sends: botocore would drop a default port the URL writes
    (`https://vpce…:443`), the client keeps it, and AWS checks the header as it arrives."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    host = host_header(urlsplit(upstream_request.url))
    aws = AWSRequest(method=upstream_request.method, url=upstream_request.url,
                     data=upstream_request.body, headers={**upstream_request.headers, "host": host})
    SigV4Auth(frozen, service, region).add_auth(aws)
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        if name in aws.headers:
            upstream_request.headers[name] = aws.headers[name]


# -- gcp ----------------------------------------------------------------------------------------
def google_source(spec: str | None) -> Source:
    state: dict = {}

    def fetch(force: bool):
        from google.auth import exceptions
        from google.auth.transport.requests import Request

        if force or "creds" not in state:
            state["creds"], state["what"] = _google_credentials(spec)
        creds = state["creds"]
        try:
            creds.refresh(Request())
        except exceptions.GoogleAuthError:
            raise CredentialFailed(f"{state['what']} failed") from None
        expiry = creds.expiry  # naive UTC
        return creds.token, calendar.timegm(expiry.utctimetuple()) if expiry is not None else None

    return Source(fetch, margin=GOOGLE_MARGIN)


def _google_credentials(spec: str | None):
    import google.auth
    from google.auth import exceptions
    from google.oauth2 import service_account

    if spec is None:
        try:
            creds, _ = google.auth.default(scopes=[GOOGLE_SCOPE])
        except exceptions.GoogleAuthError:
            raise CredentialFailed("no Google Application Default Credentials were found") from None
        return creds, "Google token request (Application Default Credentials)"
    try:
        info = orjson.loads(read_spec(spec))
        creds = service_account.Credentials.from_service_account_info(info, scopes=[GOOGLE_SCOPE])
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
        raise CredentialFailed("the service-account JSON in `credentials` is not valid") from None
    return creds, "service-account token exchange"


# -- azure --------------------------------------------------------------------------------------
def azure_source() -> Source:
    state: dict = {}

    def fetch(force: bool):
        if force or "creds" not in state:  # a new credential: azure-identity keeps its token otherwise
            state["creds"], state["what"] = _azure_credential()
        try:
            token = state["creds"].get_token(AZURE_SCOPE)
        except Exception:
            raise CredentialFailed(f"{state['what']} failed") from None
        return token.token, float(token.expires_on)

    return Source(fetch)


def _azure_credential():
    from azure.identity import ClientAssertionCredential, DefaultAzureCredential

    token_file = os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    client, tenant = os.environ.get("AZURE_CLIENT_ID"), os.environ.get("AZURE_TENANT_ID")
    if not (token_file and client and tenant):
        return DefaultAzureCredential(), "Azure default credential chain"
    kwargs: dict = {}
    authority = os.environ.get("AZURE_AUTHORITY_HOST")
    if authority:
        kwargs["authority"] = authority
        host = urlsplit(authority if "://" in authority else "https://" + authority).hostname
        if host not in _ENTRA_HOSTS:
            kwargs["disable_instance_discovery"] = True

    def assertion() -> str:
        try:
            with open(token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError:
            raise CredentialFailed(f"the federated token file {token_file} cannot be read") from None

    return ClientAssertionCredential(tenant, client, assertion, **kwargs), "workload identity token exchange"
