"""Run inside the keylime 7.14.3 venv: time keylime.tpm.tpm_util.checkquote on given files.

python keylime_checkquote.py AK_PEM ATTEST SIG PCRFILE NONCE_HEX HASH REPEAT  → prints JSON
"""

import json
import logging
import statistics
import sys
import time

logging.disable(logging.CRITICAL)
from keylime.tpm import tpm_util  # noqa: E402

ak, attest, sig, pcrs = (open(p, "rb").read() for p in sys.argv[1:5])
nonce, alg, repeat = sys.argv[5], sys.argv[6], int(sys.argv[7])
result = tpm_util.checkquote(ak, nonce, sig, attest, pcrs, alg)  # raises if the quote is bad
samples = []
for _ in range(repeat):
    t0 = time.perf_counter()
    tpm_util.checkquote(ak, nonce, sig, attest, pcrs, alg)
    samples.append(time.perf_counter() - t0)
print(json.dumps({"median": statistics.median(samples), "pcrs": len(result)}))
