"""The limit later benchmarks compare against: a bare web3 send-and-wait loop on anvil automine.

Why: issue 6 asks for submitter throughput/latency "compared in the same run with a bare web3
send-and-wait loop". This is that loop, one `record` transaction at a time from one account,
each signed locally with a locally counted nonce, sent raw and waited for (receipt only, no
confirmations). `client` mode runs the same loop through ThresholdRecordClient to show its overhead.

A bench helper, so it lives in bench/ (it starts anvils through `devstack`, which the production
`chain` package must not import); `bench/submit_bench.py` imports `measure` from it.

    python bench/chain_baseline.py --count 300            # a fresh anvil per mode, prints JSON lines
    python bench/chain_baseline.py --url http://127.0.0.1:8545 --count 300   # against a running one
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import blake3  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402

from chain import Fees, ThresholdRecordClient, make_web3  # noqa: E402
from devstack.anvil import DEFAULT_CHAIN_ID, Anvil, dev_private_key  # noqa: E402


def _percentile(sorted_values: list[float], q: float) -> float:
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def run_loop(
    client: ThresholdRecordClient, account: LocalAccount, count: int, *, mode: str, prefix: str
) -> dict[str, Any]:
    """`count` sequential record transactions; returns throughput and latency figures."""
    w3 = client.w3
    nonce = client.pending_nonce(account.address)
    fees: Fees = client.suggest_fees()
    cert = blake3.blake3(b"baseline").digest()  # any 32 bytes: the loop measures the chain, not the log
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        signed = client.sign_record(account, f"{prefix}-{i}", i, cert, nonce=nonce, fees=fees)
        if mode == "bare":
            w3.eth.send_raw_transaction(signed.raw)
            receipt = w3.eth.wait_for_transaction_receipt(signed.tx_hash, timeout=30, poll_latency=0.005)
            if receipt["status"] != 1:
                raise RuntimeError(f"baseline transaction {i} failed")
        else:
            client.submit(signed)
        latencies.append(time.perf_counter() - t0)
        nonce += 1
    elapsed = time.perf_counter() - started
    lat = sorted(latencies)
    return {
        "mode": mode,
        "count": count,
        "seconds": round(elapsed, 3),
        "tx_per_s": round(count / elapsed, 1),
        "latency_ms_p50": round(_percentile(lat, 0.50) * 1000, 2),
        "latency_ms_p99": round(_percentile(lat, 0.99) * 1000, 2),
        "latency_ms_mean": round(statistics.fmean(lat) * 1000, 2),
    }


def measure(url: str, count: int, mode: str = "bare", chain_id: int = DEFAULT_CHAIN_ID) -> dict[str, Any]:
    """Deploy a fresh contract at `url`, warm up, and run one loop of `count` transactions."""
    w3 = make_web3(url)
    owner = Account.from_key(dev_private_key(0))
    sender = Account.from_key(dev_private_key(1))
    client = ThresholdRecordClient.deploy(w3, owner, [sender.address], chain_id=chain_id)
    run_loop(client, sender, min(20, count), mode=mode, prefix="warmup")
    return run_loop(client, sender, count, mode=mode, prefix=f"{mode}-{time.time_ns()}")


def main(argv: list[str] | None = None) -> int:
    """Each mode on its own fresh anvil: anvil's per-transaction cost grows with chain length
    (measured: ~2x slower after ~1,500 automined blocks), so sharing one chain would favour
    whichever loop runs first."""
    parser = argparse.ArgumentParser(description="bare web3 send-and-wait loop against anvil automine")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--url", default=None, help="use a running node instead of fresh anvils")
    parser.add_argument("--modes", default="bare,client", help="comma-separated: bare, client")
    args = parser.parse_args(argv)
    for mode in args.modes.split(","):
        if args.url:
            result = measure(args.url, args.count, mode)
        else:
            with Anvil() as node:
                result = measure(node.url, args.count, mode)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
