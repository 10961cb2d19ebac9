"""Loopback fakes of AWS: the credential services and a Bedrock runtime that checks SigV4.

`FakeSTS` answers the query-protocol call botocore makes for IRSA (a form POST; an XML answer),
each time with new temporary keys expiring `lifetime` s later, and only for the expected web
identity token. `FakePodIdentity` is the EKS Pod Identity agent (a GET answered with JSON keys,
only for the `Authorization` token the pod's token file holds); `FakeIMDS` the EC2 instance
metadata service, IMDSv2 (a PUT for a session token, then the role and its keys for that token).
`FakeBedrock` recomputes every request's SigV4 signature with botocore from the keys one of them
issued (or a static pair) and refuses a wrong one with 403, then answers Converse JSON, a
ConverseStream eventstream written in odd-sized pieces, or a Titan embedding (InvokeModel).
"""

from __future__ import annotations

import datetime
import secrets

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fakes import eventstream

STS_XML = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:llm:gateway</SubjectFromWebIdentityToken>
    <AssumedRoleUser><Arn>arn:aws:sts::111122223333:assumed-role/gateway/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken><Expiration>{expiration}</Expiration>
    </Credentials>
    <Audience>sts.amazonaws.com</Audience><Provider>oidc.eks.us-east-1.amazonaws.com/id/X</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""
STS_ERROR = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>
<Code>InvalidIdentityToken</Code><Message>Incorrect token audience</Message></Error>
<RequestId>r-1</RequestId></ErrorResponse>"""


class _Served:
    """A fake served on loopback by pytest-aiohttp's `aiohttp_server`; `url` is where it is called."""

    URL_PATH = ""  # what a client is given after the host and port

    async def start(self, aiohttp_server):
        self.server = await aiohttp_server(self.app)
        self.url = f"http://127.0.0.1:{self.server.port}{self.URL_PATH}"
        return self


class FakeSTS(_Served):
    def __init__(self, web_identity_token: str, lifetime: float = 3600) -> None:
        self.web_identity_token = web_identity_token
        self.lifetime = lifetime
        self.fail = False
        self.calls = 0
        self.issued: dict[str, tuple[str, str]] = {}  # access key id → (secret, session token)
        self.app = web.Application()
        self.app.router.add_post("/", self._serve)

    async def _serve(self, request: web.Request) -> web.Response:
        self.calls += 1
        form = await request.post()
        if self.fail or form.get("Action") != "AssumeRoleWithWebIdentity" \
                or form.get("WebIdentityToken") != self.web_identity_token:
            return web.Response(status=400, text=STS_ERROR, content_type="text/xml")
        keys = temporary_keys(self.issued, self.lifetime)
        body = STS_XML.format(key=keys["AccessKeyId"], secret=keys["SecretAccessKey"], token=keys["Token"],
                              request_id=secrets.token_hex(8), expiration=keys["Expiration"])
        return web.Response(text=body, content_type="text/xml")


def temporary_keys(issued: dict[str, tuple[str, str]], lifetime: float) -> dict:
    """New temporary keys, kept in `issued`, in the JSON shape of the container and instance services."""
    key, secret, token = "ASIA" + secrets.token_hex(8).upper(), secrets.token_hex(20), secrets.token_hex(40)
    issued[key] = (secret, token)
    expiration = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=lifetime)
    return {"AccessKeyId": key, "SecretAccessKey": secret, "Token": token,
            "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ")}


class FakePodIdentity(_Served):
    """The EKS Pod Identity agent: `GET /v1/credentials` with the pod's token as `Authorization`."""

    URL_PATH = "/v1/credentials"

    def __init__(self, token: str, lifetime: float = 3600) -> None:
        self.token = token
        self.lifetime = lifetime
        self.fail = False
        self.calls = 0
        self.tokens_seen: list[str] = []
        self.issued: dict[str, tuple[str, str]] = {}
        self.app = web.Application()
        self.app.router.add_get("/v1/credentials", self._serve)

    async def _serve(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.tokens_seen.append(request.headers.get("Authorization", ""))
        if self.fail:
            return web.json_response({"message": "Service account token cannot be empty."}, status=500)
        if request.headers.get("Authorization") != self.token:
            return web.json_response({"message": "Token is not valid."}, status=400)
        return web.json_response({**temporary_keys(self.issued, self.lifetime), "AccountId": "111122223333"})


class FakeIMDS(_Served):
    """EC2 instance metadata, IMDSv2 only: role credentials for a session token from `PUT /latest/api/token`."""

    URL_PATH = "/"

    ROLE = "gateway-instance-role"
    PATH = "/latest/meta-data/iam/security-credentials/"

    def __init__(self, lifetime: float = 3600) -> None:
        self.lifetime = lifetime
        self.session_tokens: set[str] = set()
        self.credential_calls = 0
        self.issued: dict[str, tuple[str, str]] = {}
        self.app = web.Application()
        self.app.router.add_put("/latest/api/token", self._token)
        self.app.router.add_get(self.PATH, self._role)
        self.app.router.add_get(self.PATH + "{role}", self._credentials)

    async def _token(self, request: web.Request) -> web.Response:
        if not request.headers.get("x-aws-ec2-metadata-token-ttl-seconds"):
            return web.Response(status=400)
        token = secrets.token_urlsafe(32)
        self.session_tokens.add(token)
        return web.Response(text=token)

    def _allowed(self, request: web.Request) -> bool:
        return request.headers.get("x-aws-ec2-metadata-token") in self.session_tokens

    async def _role(self, request: web.Request) -> web.Response:
        return web.Response(text=self.ROLE) if self._allowed(request) else web.Response(status=401)

    async def _credentials(self, request: web.Request) -> web.Response:
        if not self._allowed(request) or request.match_info["role"] != self.ROLE:
            return web.Response(status=401 if not self._allowed(request) else 404)
        self.credential_calls += 1
        return web.json_response({"Code": "Success", "LastUpdated": "2025-01-01T00:00:00Z", "Type": "AWS-HMAC",
                                  **temporary_keys(self.issued, self.lifetime)})


def signature_ok(request: web.Request, body: bytes, keys: dict[str, tuple[str, str | None]]) -> str | None:
    """The access key id of a valid SigV4 signature (service bedrock), else None."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("AWS4-HMAC-SHA256 "):
        return None
    fields = dict(part.strip().split("=", 1) for part in header[len("AWS4-HMAC-SHA256 "):].split(","))
    key, date, region, service, _ = fields["Credential"].split("/")
    if key not in keys or service != "bedrock":
        return None
    secret, token = keys[key]
    if token is not None and request.headers.get("X-Amz-Security-Token") != token:
        return None
    signed = fields["SignedHeaders"].split(";")
    aws = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}", data=body,
                     headers={name: request.headers[name] for name in signed if name in request.headers})
    aws.context["timestamp"] = request.headers["X-Amz-Date"]
    auth = SigV4Auth(Credentials(key, secret, token), service, region)
    expected = auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)
    return key if secrets.compare_digest(expected, fields["Signature"]) else None


ANSWER = {"output": {"message": {"role": "assistant", "content": [{"text": "Hello from Bedrock."}]}},
          "stopReason": "end_turn", "usage": {"inputTokens": 5, "outputTokens": 4, "totalTokens": 9}}


def stream_frames(text: str = "Hello from Bedrock.") -> bytes:
    return b"".join([
        eventstream.event("messageStart", {"role": "assistant"}),
        eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}),
        eventstream.event("contentBlockStop", {"contentBlockIndex": 0}),
        eventstream.event("messageStop", {"stopReason": "end_turn"}),
        eventstream.event("metadata", {"usage": {"inputTokens": 5, "outputTokens": 4, "totalTokens": 9}})])


class FakeBedrock(_Served):
    def __init__(self, keys: dict[str, tuple[str, str | None]]) -> None:
        self.keys = keys  # shared with FakeSTS.issued: whatever STS issued is valid here
        self.calls = 0
        self.refuse = 0  # answer this many next requests 403 ExpiredTokenException
        self.signed_with: list[str] = []
        self.bodies: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/model/{model}/{method}", self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.read()
        key = signature_ok(request, body, self.keys)
        if key is None or self.refuse:
            self.refuse = max(self.refuse - 1, 0)
            kind = "ExpiredTokenException" if key else "InvalidSignatureException"
            return web.json_response({"message": "The security token included in the request is invalid."},
                                     status=403, headers={"x-amzn-ErrorType": kind})
        self.signed_with.append(key)
        self.bodies.append(orjson.loads(body))
        if request.match_info["method"] == "converse":
            return web.json_response(ANSWER)
        if request.match_info["method"] == "invoke":  # InvokeModel, as a Titan embeddings model answers it
            return web.json_response({"embedding": [0.25, -0.5], "inputTextTokenCount": 4})
        out = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await out.prepare(request)
        data, at, size = stream_frames(), 0, 1
        while at < len(data):  # odd pieces: inside preludes, headers and CRCs
            await out.write(data[at:at + size])
            at, size = at + size, size % 23 + 7
        await out.write_eof()
        return out
