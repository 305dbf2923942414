"""Run inside the keylime 7.14.3 venv: keylime's verifier checks of one attestation, timed in-process.

python keylime_appraise.py AK ATTEST SIG PCRFILE BOOTLOG IMALIST EXCLUDES NONCE REPEAT [--selfcheck]
    → prints one JSON line: {"full": s, "stages": {name: s}, "selfcheck": {...}, ...}

AK is the AK's TPM2B_PUBLIC (what keylime's registrar stores), ATTEST/SIG/PCRFILE what tpm2_quote
writes (-m/-s/-o), BOOTLOG the binary UEFI log, IMALIST the ASCII IMA list, EXCLUDES one regular
expression per line. keylime's settings come from the files KEYLIME_VERIFIER_CONFIG and
KEYLIME_LOGGING_CONFIG name (appraisal_bench.py writes them into its temporary directory).

Per attestation this does what keylime's verifier does with an agent's quote response
(`cloud_verifier_common.process_quote_response`): the IMA keyrings from the runtime policy, then
`tpm_main.Tpm().check_quote(...)`: `tpm_util.checkquote`; `mba.bootlog_parse` (tpm2_eventlog as a
subprocess, YAML, enrichment with libefivar); the boot PCRs compared with the log; IMA
`process_measurement_list` against the runtime policy (replay of PCR 10, allowlist, excludes);
`mba.bootlog_evaluate` with the shipped `example` reference-state policy. A fresh agent state each
time, as for a full (not incremental) IMA list.

Setup, once (not timed), with keylime's own code where it can be imported: the reference state by
`keylime.policy.create_mb_policy.create_mb_refstate` from the boot log; the runtime policy as
`keylime-policy create runtime --ima-measurement-list --excludelist` builds it (its module needs
psutil and SQLAlchemy, so its steps are repeated here: digests from the list's ima-ng lines, the
excludes, validation by `ima.validate_runtime_policy`), stored as JSON text as the verifier keeps it.

Not in the main figure (reported on their own): deserializing the runtime policy from that JSON
text, which keylime's verifier does on every attestation (`ima.deserialize_runtime_policy`);
logging (disabled, as keylime_checkquote.py does; the verifier logs at INFO). Left out: the
PCR 16 key-binding check (`data=None`): vroot has no counterpart.
"""

import argparse
import base64
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import types


class _Unavailable(types.ModuleType):
    """Stands in for the GPGME bindings (`gpg`, Debian's python3-gpg, not on PyPI as a wheel):
    keylime.signing imports it at module level but only uses it to check GPG-signed policies,
    which this run never does. Any use raises, so a stand-in cannot change a result."""

    def __getattr__(self, name):
        raise RuntimeError(f"the {self.__name__} module is not installed in keylime's venv")


try:
    import gpg  # noqa: F401
except ImportError:
    sys.modules["gpg"] = _Unavailable("gpg")

logging.disable(logging.CRITICAL)

# keylime 7.14.3's wheel declares no dependencies; its verifier code needs these (and libefivar)
NEEDS = "pip install pyasn1 pyasn1-modules jsonschema lark packaging; apt-get install libefivar1"
try:
    import ctypes

    from keylime import config
    from keylime.agentstates import AgentAttestState
    from keylime.common.algorithms import Hash
    from keylime.ima import file_signatures, ima
    from keylime.mba import mba
    from keylime.tpm.tpm_main import Tpm

    ctypes.CDLL(config.LIBEFIVAR)  # tpm_bootlog_enrich loads it when it parses a boot log
except (ImportError, OSError) as exc:
    print(
        json.dumps({"error": f"keylime's verifier code cannot run in this venv ({exc}); it needs: {NEEDS}"})
    )
    sys.exit(2)

AGENT_ID = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000"


def _median(fn, repeat):
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def make_refstate(boot_log_path):
    from keylime.policy import create_mb_policy

    with tempfile.NamedTemporaryFile("w+", suffix=".json") as out:
        refstate = create_mb_policy.create_mb_refstate(
            argparse.Namespace(eventlog_file=boot_log_path, without_secureboot=False, output=out.name)
        )
    if not refstate:
        raise SystemExit(
            json.dumps({"error": "keylime's create_mb_refstate could not make a reference state"})
        )
    return refstate


def make_runtime_policy(ima_text, excludes):
    policy = ima.empty_policy()
    digests = {}
    for line in ima_text.splitlines():  # as create_runtime_policy.get_hashes_from_measurement_list
        pieces = line.split(" ")
        if len(pieces) < 5 or pieces[2] not in ("ima-sig", "ima-ng"):
            continue
        digests.setdefault(pieces[4].rstrip("\n"), []).append(pieces[3].split(":")[1])
    policy["digests"] = {k: sorted(set(v)) for k, v in digests.items()}
    policy["excludes"] = sorted(set(excludes))
    policy["meta"]["generator"] = ima.RUNTIME_POLICY_GENERATOR.LegacyAllowList
    ima.validate_runtime_policy(policy)
    return policy


def main():
    parser = argparse.ArgumentParser()
    for name in ("ak", "attest", "sig", "pcrs", "boot", "ima", "excludes", "nonce"):
        parser.add_argument(name)
    parser.add_argument("repeat", type=int)
    parser.add_argument("--selfcheck", action="store_true", help="also run negative controls")
    args = parser.parse_args()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    ak_b64 = base64.b64encode(read(args.ak)).decode()
    quote = "r" + ":".join(base64.b64encode(read(p)).decode() for p in (args.attest, args.sig, args.pcrs))
    boot_b64 = base64.b64encode(read(args.boot)).decode()
    ima_text = read(args.ima).decode()
    excludes = [line for line in read(args.excludes).decode().splitlines() if line]
    nonce = args.nonce

    mba.load_imports()  # the verifier does this at start-up
    refstate = make_refstate(os.path.abspath(args.boot))
    mb_policy = json.dumps(refstate)
    policy_text = json.dumps(make_runtime_policy(ima_text, excludes))  # as the verifier stores it
    runtime_policy = ima.deserialize_runtime_policy(policy_text)
    tpm = Tpm()

    def attest(nonce=nonce, runtime_policy=runtime_policy, mb_policy=mb_policy, quote=quote):
        state = AgentAttestState(AGENT_ID)
        keyrings = state.get_ima_keyrings()
        keyrings.set_tenant_keyring(
            file_signatures.ImaKeyring.from_string(runtime_policy["verification-keys"])
        )
        return tpm.check_quote(state, nonce, None, quote, ak_b64, {}, ima_text, runtime_policy, Hash.SHA256,
                               keyrings, boot_b64, mb_policy, mb_policy_name="example", compressed=False,
                               count=0)  # fmt: skip

    failure = attest()
    if failure:
        print(json.dumps({"error": f"keylime does not accept the evidence: {failure.get_event_ids()}",
                          "events": [str(e.context)[:500] for e in failure.events[:5]]}))  # fmt: skip
        return 1

    # each stage alone, with the arguments check_quote gives it
    pcrs_dict, err = Tpm._tpm2_checkquote(ak_b64, quote, nonce, "sha256", False)
    assert not err, err
    pcr_hashes, aggregates, mb_data, mb_failure = mba.bootlog_parse(boot_b64, Hash.SHA256)
    assert not mb_failure
    quoted = set(pcrs_dict)

    def ima_stage():
        state = AgentAttestState(AGENT_ID)
        _, f = ima.process_measurement_list(state, ima_text.split("\n"), runtime_policy, pcrval=pcrs_dict[10],
                                            ima_keyrings=state.get_ima_keyrings(), boot_aggregates=aggregates,
                                            hash_alg=Hash.SHA256)  # fmt: skip
        assert not f, f.get_event_ids()

    repeat = args.repeat
    stages = {
        "`tpm_util.checkquote` (via `Tpm._tpm2_checkquote`)": _median(
            lambda: Tpm._tpm2_checkquote(ak_b64, quote, nonce, "sha256", False), repeat * 10),
        "`mba.bootlog_parse` (tpm2_eventlog subprocess + YAML + enrich)": _median(
            lambda: mba.bootlog_parse(boot_b64, Hash.SHA256), repeat),
        "`mba.bootlog_evaluate` (`example` policy)": _median(
            lambda: mba.bootlog_evaluate(mb_policy, copy.deepcopy(mb_data), quoted, AGENT_ID), repeat),
        "`ima.process_measurement_list` (1,000 lines)": _median(ima_stage, repeat),
        "not in the main figure: `ima.deserialize_runtime_policy` (per attestation in the verifier)": _median(
            lambda: ima.deserialize_runtime_policy(policy_text), repeat),
    }  # fmt: skip
    full = _median(attest, repeat)
    before = os.times()
    for _ in range(repeat):
        attest()
    after = os.times()
    # CPU time, the tpm2_eventlog child processes included (the parent waits for them)
    cpu = sum(after[i] - before[i] for i in range(4)) / repeat
    report = {
        "full": full,
        "full_cpu": cpu,
        "stages": stages,
        "pcrs_quoted": sorted(pcrs_dict),
        "refstate_kernels": len(refstate.get("kernels", [])),
        "allowlist_paths": len(runtime_policy["digests"]),
        "ima_lines": len([line for line in ima_text.split("\n") if line]),
        "boot_events": len(mb_data.get("events", [])),
    }
    if args.selfcheck:
        other = "0x" + "ab" * 32
        bad_refstate = copy.deepcopy(refstate)
        bad_refstate["kernels"][0]["shim_authcode_sha256"] = other
        bad_cmdline = copy.deepcopy(refstate)
        bad_cmdline["kernels"][0]["kernel_cmdline"] = "single"
        a_path = next(p for p in runtime_policy["digests"] if p.startswith("/usr/bin/"))
        bad_digest = copy.deepcopy(runtime_policy)
        bad_digest["digests"][a_path] = ["ab" * 32]
        missing = copy.deepcopy(runtime_policy)
        del missing["digests"][a_path]
        attest_b64, sig_b64, pcr_b64 = quote[1:].split(":")
        raw = bytearray(base64.b64decode(pcr_b64))
        raw[132 + 4 + 4 + 2] ^= 1  # the agent lies about PCR 0 (first digest of the tpm2-tools PCR file)
        report["selfcheck"] = {
            "wrong nonce": bool(attest(nonce="X" * len(nonce))),
            "PCR file altered": bool(attest(quote=f"r{attest_b64}:{sig_b64}:{base64.b64encode(bytes(raw)).decode()}")),
            "refstate: another shim": bool(attest(mb_policy=json.dumps(bad_refstate))),
            "refstate: another kernel command line": bool(attest(mb_policy=json.dumps(bad_cmdline))),
            "runtime policy: another digest for one path": bool(attest(runtime_policy=bad_digest)),
            "runtime policy: one path missing": bool(attest(runtime_policy=missing)),
        }  # fmt: skip
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
