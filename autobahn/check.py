"""Checks a kosoku (Autobahn) report: every case's behavior and
behaviorClose must be OK or INFORMATIONAL (NON-STRICT fails), and the
results must match autobahn/expected-results.json.

usage: check.py REPORT_DIR/index.json EXPECTED.json [--write]
"""

import json
import sys

GOOD = {"OK", "INFORMATIONAL"}


def main() -> int:
    index_path, expected_path = sys.argv[1], sys.argv[2]
    with open(index_path) as f:
        index = json.load(f)
    results = {}
    for agent in index.values():
        for case, r in agent.items():
            results[case] = {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
    if "--write" in sys.argv:
        with open(expected_path, "w") as f:
            json.dump(dict(sorted(results.items(), key=lambda kv: [int(p) for p in kv[0].split(".")])), f, indent=1)
            f.write("\n")
    bad = {c: r for c, r in results.items() if r["behavior"] not in GOOD or r["behaviorClose"] not in GOOD}
    print(f"autobahn: {len(results) - len(bad)} OK, {len(bad)} not OK")
    for case, r in sorted(bad.items()):
        print(f"  {case}: behavior={r['behavior']} behaviorClose={r['behaviorClose']}")
    with open(expected_path) as f:
        expected = json.load(f)
    diff = []
    for case in sorted(set(expected) | set(results)):
        if expected.get(case) != results.get(case):
            diff.append(f"  {case}: expected {expected.get(case)}, got {results.get(case)}")
    if diff:
        print(f"autobahn: {len(diff)} cases differ from {expected_path}:")
        print("\n".join(diff))
    return 1 if bad or diff else 0


if __name__ == "__main__":
    sys.exit(main())
