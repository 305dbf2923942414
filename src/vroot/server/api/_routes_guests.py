"""Guest enrollment (RA-1, VMM-F4, VMM-S3): a VM's guest attester enrolls its vTM as `vm:<uuid>`,
checked against the record of the host it runs on. Needs no credentials, as host enrollment:
the vEK certificate and the credential activation in the vTM are the proof."""

from typing import Annotated

from fastapi import APIRouter, Path

from vroot.server.api._app import AppContext
from vroot.server.api._routes_public import errors
from vroot.server.api._schemas import (
    AGENT_ID_PATTERN,
    ChallengeOut,
    EnrolledOut,
    GuestActivationIn,
    GuestEnrollmentIn,
)

__all__ = ["guest_routes"]


def guest_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/guest-enrollments", response_model=ChallengeOut, status_code=201, tags=["enrollment"],
                 responses=errors(400, 403, 404, 409, 422, 503))  # fmt: skip
    def begin_guest_enrollment(body: GuestEnrollmentIn) -> ChallengeOut:
        """Begin a VM's enrollment (RA-1, RA-7): its vEK certificate must verify under the vTM-manager
        key that the named host's AK certified when the host enrolled (a forged one, or one made on
        another host, is refused and recorded as an "enrollment.refused" event); the answer is a
        credential only that vTM can open, for that vAK."""
        return ChallengeOut.of(ctx.guests.begin(body.to_domain()))

    @router.post("/v1/guest-enrollments/{agent_id}/activation", response_model=EnrolledOut, tags=["enrollment"],
                 responses=errors(400, 403, 404, 409, 422, 503))  # fmt: skip
    def activate_guest(body: GuestActivationIn, agent_id: Annotated[str, Path(pattern=AGENT_ID_PATTERN)]) -> EnrolledOut:
        """Finish it with the secret the vTM released: the PCA issues the vAK certificate (marked
        virtual), the operations CA the client certificate, and the guest becomes active. Single use."""
        return EnrolledOut.of(ctx.guests.activate(body.to_domain(agent_id)))

    return router
