"""tests/vectors/*.json against the independent JavaScript implementation (interop/js/vectors.mjs): keys and
peer ids, signing bytes and signatures (strict Ed25519, @noble/ed25519), batches and message ids, the edge's
verdict and counters for every case, the certificate, the envelope's bytes and verdicts, every log row's hash
and every append's signature. No cluster needed."""

from __future__ import annotations

import re

from jsrun import check_installed, run_js


def test_the_javascript_implementation_agrees_with_every_vector():
    check_installed()
    r = run_js("vectors.mjs", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"vectors: (\d+) passed, 0 failed", r.stdout)
    assert m and int(m.group(1)) > 150, r.stdout
