"""Turns a JUnit XML report into Sphere's tests report: a JSON array of
{name, status (ok, failure, error, skipped), time, classname, failure|error}, written where
$SE_PATH_FINAL_TESTS_REPORT says."""
import json
import os
import sys
import xml.etree.ElementTree as ET


def main(path):
    root = ET.parse(path).getroot()
    cases = root.iter("testcase")
    report = []
    for case in cases:
        entry = {
            "name": case.get("name", ""),
            "classname": case.get("classname", ""),
            "time": float(case.get("time") or 0),
            "status": "ok",
        }
        for kind in ("failure", "error", "skipped"):
            child = case.find(kind)
            if child is not None:
                entry["status"] = kind
                if kind != "skipped":
                    entry[kind] = child.get("message") or (child.text or "").strip()
                break
        report.append(entry)
    with open(os.environ["SE_PATH_FINAL_TESTS_REPORT"], "w") as out:
        json.dump(report, out)
    print(f"{sum(e['status'] == 'ok' for e in report)} of {len(report)} tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
