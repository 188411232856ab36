#!/usr/bin/env python3
"""Compile ThresholdRecord.sol with the pinned solc-js and write the committed artifact.

Why solc-js through node: the compiler comes from the npm lock file (no compiler download at run
time) and the same bytes come out on every machine, so the committed artifact can be checked
against the source (`--check`, used by the tests and CI).

    python contracts/build.py           # (re)write contracts/ThresholdRecord.json
    python contracts/build.py --check   # exit 1 if the committed artifact differs from a fresh compile

Needs `npm ci` at the repo root first. Standard library only, so it runs before the venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = CONTRACTS_DIR.parent
SOURCE_NAME = "ThresholdRecord.sol"
CONTRACT_NAME = "ThresholdRecord"
SOURCE_PATH = CONTRACTS_DIR / SOURCE_NAME
ARTIFACT_PATH = CONTRACTS_DIR / f"{CONTRACT_NAME}.json"
SOLC_VERSION = "0.8.37"  # must match package.json; a different compiler is refused, not tolerated

# Fixed settings: changing any of them changes the bytecode, so they are part of the artifact.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {
        SOURCE_NAME: {CONTRACT_NAME: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}
    },
}

# Runs solc-js's standard-JSON compile; reads the input on stdin, prints the output and the version.
_NODE_SCRIPT = r"""
const path = require('path');
const solc = require(require.resolve('solc', { paths: [process.argv[1]] }));
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const output = JSON.parse(solc.compile(input));
  process.stdout.write(JSON.stringify({ version: solc.version(), output }));
});
"""


class BuildError(RuntimeError):
    """Compilation failed or the toolchain is not the pinned one."""


def compile_artifact(source: str | None = None) -> dict[str, Any]:
    """Compile the contract source (default: the file on disk) and return the artifact dict."""
    if source is None:
        source = SOURCE_PATH.read_text(encoding="utf-8")
    std_input = {"language": "Solidity", "sources": {SOURCE_NAME: {"content": source}}, "settings": SETTINGS}
    try:
        proc = subprocess.run(
            ["node", "-e", _NODE_SCRIPT, str(REPO_ROOT)],
            input=json.dumps(std_input),
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=300,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BuildError(
            "`node` not found on PATH: install Node.js, then run `npm ci` at the repo root"
        ) from exc
    if proc.returncode != 0:
        raise BuildError(f"solc-js failed (did you run `npm ci` at the repo root?):\n{proc.stderr.strip()}")
    result = json.loads(proc.stdout)
    version: str = result["version"]
    if not version.startswith(SOLC_VERSION + "+"):
        raise BuildError(f"solc-js {version} found, {SOLC_VERSION} pinned: run `npm ci` at the repo root")
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    contract = output["contracts"][SOURCE_NAME][CONTRACT_NAME]
    return {
        "contractName": CONTRACT_NAME,
        "sourceName": SOURCE_NAME,
        "sourceSha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "compiler": {"name": "solc-js", "version": version},
        "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
    }


def render(artifact: dict[str, Any]) -> str:
    """Deterministic JSON text, so a fresh build of unchanged source is byte-identical."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed artifact, write nothing"
    )
    args = parser.parse_args(argv)
    try:
        fresh = render(compile_artifact())
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 2
    if args.check:
        committed = ARTIFACT_PATH.read_text(encoding="utf-8") if ARTIFACT_PATH.exists() else ""
        if committed != fresh:
            print(f"{ARTIFACT_PATH} is stale: run `python contracts/build.py`", file=sys.stderr)
            return 1
        print(f"{ARTIFACT_PATH.name} matches {SOURCE_NAME}")
        return 0
    ARTIFACT_PATH.write_text(fresh, encoding="utf-8")
    print(f"wrote {ARTIFACT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
