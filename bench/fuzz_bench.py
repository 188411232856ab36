"""Fuzz bench: every input surface at >= 100,000 hypothesis inputs, with figures (issue 8, point 4).

Why a bench beside tests/fuzz: CI runs the same checks on a small budget; this run is the
evidence that each surface survives 100k inputs. It never stops at the first finding: it counts
inputs/s, crashes, state changes from invalid input, invalid input accepted, hangs and non-JSON
answers per surface, labels findings that match a reported bug (``KNOWN`` in
tests/fuzz/fuzz_surfaces.py), and prints the first example of each kind.

    .venv/bin/python bench/fuzz_bench.py                      # all surfaces, 100k each, 2 jobs
    .venv/bin/python bench/fuzz_bench.py -n 2000 rules api     # a quick look at two surfaces
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "fuzz"), str(ROOT / "src")]


@dataclass
class Result:
    surface: str
    inputs: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)  # accepted / rejected / kind[/bug id]
    examples: dict[str, str] = field(default_factory=dict)  # the first detail of each finding kind

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def count(self, kind: str) -> int:
        return sum(n for k, n in self.outcomes.items() if k.split("/")[0] == kind)


def run_surface(name: str, examples: int, seed: int, progress: int = 10_000, batch: int = 20) -> Result:
    """Feed ``examples`` hypothesis inputs to one surface, tallying instead of failing."""
    import fuzz_surfaces as fs
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    surface = next(s for s in fs.surfaces() if s.name == name)
    target = surface.make()
    tally: Counter[str] = Counter()
    res = Result(name)
    t0 = time.perf_counter()

    # Each hypothesis test case draws `batch` inputs: the engine's per-case bookkeeping (~1 ms)
    # would otherwise cost more than most checks; every input is still checked on its own.
    @hseed(seed)
    @settings(max_examples=-(-examples // batch), deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def feed(data: st.DataObject) -> None:
        for _ in range(batch):
            one(data.draw(surface.strategy))

    def one(inp: object) -> None:
        n = sum(tally.values())
        if n and n % progress == 0:
            print(f"  {name}: {n} inputs, {n / (time.perf_counter() - t0):.0f}/s, findings "
                  f"{n - tally['accepted'] - tally['rejected']}", file=sys.stderr, flush=True)
        try:
            tally[target.check(inp)] += 1
        except fs.Finding as f:
            key = f.kind + (f"/{f.known}" if f.known else "/NEW")
            tally[key] += 1
            res.examples.setdefault(key, f.detail[:300])
        except Exception as e:  # a bug in the harness itself: count it, never stop the run
            tally["harness-error"] += 1
            res.examples.setdefault("harness-error", f"{type(e).__name__}: {e}"[:300])

    t0 = time.perf_counter()
    try:
        feed()
    finally:
        res.seconds = time.perf_counter() - t0
        target.close()
    res.outcomes = dict(tally)
    res.inputs = sum(tally.values())
    return res


def _run(args: tuple[str, int, int]) -> Result:
    return run_surface(*args)


def report(results: list[Result]) -> str:
    head = (f"{'surface':<12} {'inputs':>8} {'inputs/s':>9} {'accepted':>9} {'rejected':>9} {'crashes':>8} "
            f"{'state chg':>9} {'acc.inval':>9} {'hangs':>6} {'not-json':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.surface:<12} {r.inputs:>8} {r.rate:>9.0f} {r.outcomes.get('accepted', 0):>9} "
                     f"{r.outcomes.get('rejected', 0):>9} {r.count('crash'):>8} {r.count('state'):>9} "
                     f"{r.count('accepted-invalid'):>9} {r.count('hang'):>6} {r.count('not-json'):>8}")
    lines.append("")
    for r in results:
        for k, n in sorted(r.outcomes.items()):
            if k not in ("accepted", "rejected"):
                lines.append(f"{r.surface}: {n} x {k}: {r.examples.get(k, '')}")
    return "\n".join(lines)


def main() -> int:
    import fuzz_surfaces as fs

    names = [s.name for s in fs.surfaces()]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("surfaces", nargs="*", choices=[*names, []], help="default: all")
    p.add_argument("-n", "--examples", type=int, default=100_000, help="inputs per surface (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-j", "--jobs", type=int, default=2, help="surfaces run in parallel processes")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    # slowest first, so the tail of the run is not one long surface alone
    chosen = a.surfaces or sorted(names, key=lambda n: ["api", "store", "cli", "gossip"].index(n)
                                  if n in ("api", "store", "cli", "gossip") else 9)
    work = [(n, a.examples, a.seed) for n in chosen]
    t0 = time.perf_counter()
    results: list[Result] = []
    with multiprocessing.get_context("spawn").Pool(max(1, a.jobs), maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(_run, work, chunksize=1):  # print each surface as it ends
            results.append(r)
            print(f"done: {r.surface} {r.inputs} inputs in {r.seconds:.0f} s {r.outcomes}", flush=True)
            if a.json:
                a.json.write_text(json.dumps([asdict(x) | {"rate": x.rate} for x in results], indent=1))
    results.sort(key=lambda r: chosen.index(r.surface))
    print(report(results))
    print(f"\n{len(results)} surfaces, {sum(r.inputs for r in results)} inputs in {time.perf_counter() - t0:.0f} s "
          f"(seed {a.seed}, {a.jobs} jobs)")
    bad = sum(r.count(k) for r in results for k in ("crash", "state", "hang"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
