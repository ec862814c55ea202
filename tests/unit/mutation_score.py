"""Mutation score per module from mutmut's results (run after `mutmut run`, from the repo root).

    .venv/bin/python tests/unit/mutation_score.py

Not a test (pytest does not collect it). tasks/attempt.py is mostly the runner (running marker,
adapters, supervision, the partial output's removal), which the slow suite tests; only its
verification functions and the record a success writes are the target of the fast unit tests, so it
is reported for those (ATTEMPT_SCOPE) and, for information, as a whole. Exits 1 below 85 % overall.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

MODULES = ["state/files.py", "state/content.py", "state/folder.py", "state/places.py", "tasks/complete.py",
           "tasks/attempt.py", "tasks/clean.py", "spec/checks.py", "video/verify.py"]
SCOPED = "tasks/attempt.py"
#: What makes an attempt's output count as done in tasks/attempt.py, and the record a success writes.
ATTEMPT_SCOPE = {"_verify", "_check_video", "_record"}
THRESHOLD = 85.0
STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout", -24: "timeout", 5: "no tests",
          33: "no tests", 34: "skipped", 37: "caught by type check", None: "not checked"}


def function_of(key: str) -> str:
    """`helios_doit.tasks.attempt.x__verify__mutmut_3` -> `_verify`; `...xǁCompleteǁcheck__mutmut_1` -> `Complete.check`."""
    name = re.sub(r"__mutmut_\d+$", "", key.rsplit(".", 1)[-1])
    return name[1:].replace("\u01c1", ".").strip(".") if "\u01c1" in name else name[2:]


def main() -> int:
    rows, overall = [], Counter()
    for module in MODULES:
        meta = Path("mutants/helios_doit") / f"{module}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        whole = Counter(STATUS.get(code, f"exit {code}") for code in codes.values())
        if module == SCOPED:
            scoped = Counter(STATUS.get(code, f"exit {code}") for key, code in codes.items()
                             if function_of(key) in ATTEMPT_SCOPE)
            rows.append((f"{module} (whole file, for information)", whole))
            rows.append((f"{module} (verify + record)", scoped))
            overall += scoped
        else:
            rows.append((module, whole))
            overall += whole
    rows.append(("OVERALL (module set)", overall))
    print(f"{'module':44} {'killed':>7} {'timeout':>8} {'survived':>9} {'no tests':>9} {'total':>6} {'score':>7}")
    for name, c in rows:
        total = sum(c.values())
        detected = c["killed"] + c["timeout"]
        print(f"{name:44} {c['killed']:7} {c['timeout']:8} {c['survived']:9} {c['no tests']:9} {total:6} "
              f"{100 * detected / total if total else 0:6.1f}%")
    total = sum(overall.values())
    score = 100 * (overall["killed"] + overall["timeout"]) / total if total else 0.0
    return 0 if score >= THRESHOLD else 1


if __name__ == "__main__":
    sys.exit(main())
