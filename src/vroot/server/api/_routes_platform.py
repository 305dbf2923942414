"""The server's own platform, published for verification (MC-S2): the deep quote of the host this
server runs on (`platform_host` in server.toml, whose host agent must be running), over the
caller's nonce bound to the server's TLS certificate, and a credential activation with that host's
EK and AK. Public: a relying party needs no account to check the server it is about to trust."""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from vroot.attestation.platform import platform_qualifying_data
from vroot.errors import NotFound
from vroot.server.api._app import AppContext
from vroot.server.api._routes_public import errors

__all__ = ["platform_routes"]


class ActivationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential_blob: str = Field(max_length=2048, description="TPM2B_ID_OBJECT, base64")
    encrypted_secret: str = Field(max_length=2048, description="TPM2B_ENCRYPTED_SECRET, base64")


class ActivationOut(BaseModel):
    secret: str


class PlatformEvidence(BaseModel):
    host_id: str
    evidence: dict[str, Any]
    ek_public: str = Field(description="TPM2B_PUBLIC of the platform's EK, base64")
    tls_certificate_sha256: str


def platform_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter()

    def platform() -> Any:
        from vroot.host import AgentClient, HostPaths, load_host_keys

        if ctx.settings.platform_host is None:
            raise NotFound("this server publishes no platform evidence (set platform_host in server.toml)")
        paths = HostPaths(ctx.settings.platform_host)
        return AgentClient(paths.agent_socket, timeout=60), load_host_keys(paths)

    def tls_der() -> bytes:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        pem = ctx.settings.tls_certificate.read_bytes()
        return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)

    @router.get("/v1/platform/evidence", response_model=PlatformEvidence, tags=["platform"],
                responses=errors(400, 404, 422, 503))  # fmt: skip
    def evidence(nonce: Annotated[str, Query(pattern=r"^([0-9a-f]{2}){16,64}$", description="16-64 bytes, hex")]) -> PlatformEvidence:
        """The deep quote of this server's platform over SHA-256(context ‖ nonce ‖ SHA-256(TLS
        certificate)), with its logs and EK certificate (`vroot attest server` checks it)."""
        agent, keys = platform()
        der = tls_der()
        qd = platform_qualifying_data(bytes.fromhex(nonce), der)
        doc = agent.call("POST", "/v1/deep-quote", {"qualifying_data": qd.hex()})
        return PlatformEvidence(host_id=str(doc.get("host_id", "")), evidence=doc,
                                ek_public=base64.b64encode(keys.ek_public).decode(),
                                tls_certificate_sha256=hashlib.sha256(der).hexdigest())  # fmt: skip

    @router.post("/v1/platform/activate", response_model=ActivationOut, tags=["platform"],
                 responses=errors(400, 404, 422, 503))  # fmt: skip
    def activate(body: ActivationIn) -> ActivationOut:
        """TPM2_ActivateCredential with the platform's AK and EK: the caller's own challenge that both
        keys are in one TM (RA-1 applied to the server)."""
        agent, _ = platform()
        doc = agent.call("POST", "/v1/activate-credential",
                         {"credential_blob": body.credential_blob, "encrypted_secret": body.encrypted_secret})  # fmt: skip
        return ActivationOut(secret=str(doc["secret"]))

    return router
