"""The vroot RA server and PCA over HTTPS (DESIGN.md sections 3, 5, 7, 8; issue 4 points 2-4).

    vroot server init DIR [--db URL] [--manufacturer-ca PEM ...] [--listen 127.0.0.1:8443]
    vroot server run DIR
    vroot server status DIR|URL --token TOKEN

Library use, all assembled at start-up and passed down:

    from vroot.server import Services, create_app, init_server, load_settings, start_server

    result = init_server(dir, now=now, rng=os.urandom, manufacturer_cas=[ca_pem])
    print(result.operator_token)                         # once; only its SHA-256 is kept
    settings = load_settings(dir, environ=os.environ)    # VROOT_SERVER_<OPTION> overrides
    services = Services.open(settings)                   # store (migrated), PCA keys, manufacturer CAs
    app = create_app(settings, services)                 # FastAPI; or serve it:
    running = start_server(settings, services)           # uvicorn + mutual TLS, in a thread
    running.url; running.stop(); services.close()

Endpoints (`/openapi.json`, checked in as docs/openapi.json): health, metrics, status, CRL; host
enrollment (begin, activation); guest enrollment of a VM's vTM against its host's record
(`/v1/guest-enrollments`: begin, activation); agents (operator: list, show, assign a group, revoke,
enqueue a task); the agent protocol (long-poll for a task, post its result) under the agent's
client certificate; the baseline library (baselines by name and version, one policy per group);
host and VM attestation (RA-2..RA-6: trigger, follow, latest result and history with the signed
EAR, the result-signing public key); events as server-sent events and webhooks.

Host attestation, in one picture (`_attest`):

    operator  POST /v1/agents/host:h1/attestations   -> nonce (single use) in an `attest` task
    agent     GET  /v1/agents/host:h1/tasks          -> the task; deep quote over the nonce
    agent     POST /v1/agents/host:h1/tasks/N/result {"evidence": ...}
    server    nonce consumed -> AK certificate (PCA, revocation) -> quote and logs with the
              ENROLLED AK -> reboot/clock counters -> appraisal (group policy, baseline,
              incremental IMA state) -> result + signed EAR recorded -> "verdict.changed"
    scheduler the same, for every active host with a policy, each `attestation_interval`

VM attestation (`_deep`, RA-3, RA-4, RA-7): a guest `vm:<uuid>` answers its `attest` task with a
vTM quote (its enrolled vAK, its nonce) and its logs; the VMs of one host that answer together get
ONE `deep-quote` task for the host agent, over the Merkle root of their leaves; the host's answer
is judged as a host attestation, then each VM's joint verdict (its own appraisal, its host's, the
binding: leaf in the quoted tree, vEK from this host's vTM-manager key, vTM launched there) is
recorded with the host named, findings of both sides and a signed EAR.
"""

from vroot.server._attest import ATTEST, Attestations
from vroot.server._auth import AgentAuthenticator, Forbidden, Unauthenticated, check_operator_token
from vroot.server._deep import DEEP_QUOTE, DeepAttestations
from vroot.server._enroll import EnrolledAgent, Enrollments, HostActivation, HostChallenge, HostClaim
from vroot.server._guests import GUEST_GROUP, GuestActivation, GuestClaim, GuestEnrollments, guest_agent_id
from vroot.server._init import InitResult, init_server, server_names
from vroot.server._library import Library, ResolvedPolicy
from vroot.server._scheduler import Scheduler
from vroot.server._serve import RunningServer, serve, start_server
from vroot.server._services import ManufacturerTrust, Services, system_clock
from vroot.server._settings import CONFIG_NAME, Settings, load_settings
from vroot.server._tasks import TaskService, TaskWaker
from vroot.server._verdict import ClockRegressed
from vroot.server._webhooks import SIGNATURE_HEADER, WebhookDeliverer, Webhooks, event_json, sign_delivery
from vroot.server.api import create_app

__all__ = [
    "ATTEST",
    "CONFIG_NAME",
    "DEEP_QUOTE",
    "GUEST_GROUP",
    "SIGNATURE_HEADER",
    "AgentAuthenticator",
    "Attestations",
    "ClockRegressed",
    "DeepAttestations",
    "EnrolledAgent",
    "Enrollments",
    "Forbidden",
    "GuestActivation",
    "GuestClaim",
    "GuestEnrollments",
    "HostActivation",
    "HostChallenge",
    "HostClaim",
    "InitResult",
    "Library",
    "ManufacturerTrust",
    "ResolvedPolicy",
    "RunningServer",
    "Scheduler",
    "Services",
    "Settings",
    "TaskService",
    "TaskWaker",
    "Unauthenticated",
    "WebhookDeliverer",
    "Webhooks",
    "check_operator_token",
    "create_app",
    "event_json",
    "guest_agent_id",
    "init_server",
    "load_settings",
    "serve",
    "server_names",
    "sign_delivery",
    "start_server",
    "system_clock",
]
