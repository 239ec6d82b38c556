"""Runs the unit tests and writes a JUnit XML report (the file named on the command line)."""
import sys
import time
import unittest
import xml.etree.ElementTree as ET


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []

    def startTest(self, test):
        self._started = time.perf_counter()
        super().startTest(test)

    def _record(self, test, kind, message):
        cls = type(test)
        self.cases.append({
            "classname": f"{cls.__module__}.{cls.__name__}",
            "name": test._testMethodName,
            "time": time.perf_counter() - self._started,
            "kind": kind,
            "message": message,
        })

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, None, "")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failure", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self._exc_info_to_string(err, test))


def main(path):
    suite = unittest.defaultTestLoader.discover(".", pattern="test_*.py")
    runner = unittest.TextTestRunner(resultclass=Recorder, verbosity=2)
    result = runner.run(suite)
    root = ET.Element("testsuite", name="calc", tests=str(len(result.cases)),
                      failures=str(len(result.failures)), errors=str(len(result.errors)))
    for c in result.cases:
        case = ET.SubElement(root, "testcase", classname=c["classname"], name=c["name"],
                             time=f"{c['time']:.6f}")
        if c["kind"]:
            child = ET.SubElement(case, c["kind"], message=c["message"].strip().splitlines()[-1])
            child.text = c["message"]
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
