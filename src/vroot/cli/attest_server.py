"""`vroot attest server --server URL --ca PEM --manufacturer-ca PEM [--baseline B --policy P]`
(MC-S2): check the platform the RA server and migration controller run on, with nothing but the
TM manufacturer's CA and, to judge it, a baseline and policy the caller trusts.

1. the server's TLS certificate as the handshake presents it;
2. the platform's evidence over a fresh nonce bound to that certificate (`/v1/platform/evidence`);
3. a credential activation: a secret made for the evidence's AK name with the EK public key
   comes back only if both keys are in that TM (`/v1/platform/activate`);
4. `verify_platform_evidence`: the EK certificate under the manufacturer CA and certifying that
   EK, the quote under the AK, the logs replayed to the quoted PCRs, the vTM-manager key;
5. with `--baseline` and `--policy`, the appraisal of those verified logs.

Exit 0 when trusted (or, without a baseline, when the evidence verified), 1 when a check or the
appraisal says no (the reason on one line), 2 for bad input or a server that cannot be reached.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import socket
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit


def _tls_certificate(url: str, ca: Path | None) -> bytes:
    from vroot.errors import InvalidInput, Unavailable

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidInput(f"--server must be an https:// URL, got {url!r}")
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise Unavailable(f"cannot reach {url}: {exc}") from None
    if not der:
        raise Unavailable(f"{url} presented no certificate")
    return der


def attest_server(*, server: str, ca: Path | None, manufacturer_cas: list[Path], baseline: Path | None,
                  policy: Path | None, as_json: bool) -> int:  # fmt: skip
    from cryptography import x509

    from vroot.agent import ServerClient
    from vroot.attestation import UnverifiedHostEvidence
    from vroot.attestation.platform import verify_platform_evidence
    from vroot.errors import ActivationFailed, InvalidInput
    from vroot.tpm2 import make_credential, parse_public

    if not manufacturer_cas:
        raise InvalidInput("give the TM manufacturer's CA with --manufacturer-ca (repeatable)")
    if (baseline is None) != (policy is None):
        raise InvalidInput("give --baseline and --policy together")
    anchors = []
    for path in manufacturer_cas:
        try:
            anchors += x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path}: not PEM certificates ({exc})") from None
    der = _tls_certificate(server, ca)
    nonce = os.urandom(32)
    with ServerClient(server, ca_certificate=ca) as client:
        doc = client.get("/v1/platform/evidence", params={"nonce": nonce.hex()})
        evidence = UnverifiedHostEvidence.from_json(doc["evidence"])
        ek_public = parse_public(base64.b64decode(doc["ek_public"]))
        secret = os.urandom(32)
        blob, encrypted = make_credential(ek_public, parse_public(evidence.ak_public).name(), secret, rng=os.urandom)
        answer = client.post("/v1/platform/activate", {"credential_blob": base64.b64encode(blob).decode(),
                                                       "encrypted_secret": base64.b64encode(encrypted).decode()})  # fmt: skip
    if not hmac.compare_digest(base64.b64decode(answer["secret"]), secret):
        raise ActivationFailed("the platform's AK is not in the TM of its EK: the credential did not activate")
    now = datetime.now(UTC)
    verified = verify_platform_evidence(evidence, ek_public=ek_public, nonce=nonce, tls_certificate_der=der,
                                        manufacturer_cas=anchors, now=now)  # fmt: skip
    report = {"server": server, "platform": evidence.host_id, "evidence": "verified",
              "checks": ["EK certificate under the manufacturer CA", "credential activation (AK with EK)",
                         "quote over the nonce bound to the TLS certificate", "logs replayed to the quoted PCRs",
                         "vTM-manager key certified afresh"]}  # fmt: skip
    code = 0
    if baseline is not None and policy is not None:
        from vroot.baseline import appraisal_input_from_host_evidence, appraise, load_manifest, load_policy

        result = appraise(evidence=appraisal_input_from_host_evidence(verified, time=now),
                          baseline=load_manifest(baseline.read_bytes()), policy=load_policy(policy.read_bytes()), now=now)  # fmt: skip
        report["verdict"] = result.verdict
        report["findings"] = [f.to_json() for f in result.findings]
        code = 0 if result.verdict == "trusted" else 1
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"server      {server}")
        print(f"platform    {evidence.host_id}: evidence verified")
        for check in report["checks"]:
            print(f"  ✓ {check}")
        if "verdict" in report:
            print(f"verdict     {str(report['verdict']).upper()}")
            for f in report["findings"]:
                print(f"  {f['severity']:7} {f['id']}  {f['message']}")
    return code
