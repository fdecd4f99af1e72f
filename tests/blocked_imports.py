"""Run a script as if some packages were not installed: ``python tests/blocked_imports.py MOD[,MOD] SCRIPT ARGS...``.

Importing a blocked top-level module (or anything under it) raises ``ModuleNotFoundError``, as on a
machine with only the default install; used to prove inference never needs the training stack.
"""
import importlib.abc
import runpy
import sys


class Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not in the default install)", name=name)
        return None


if __name__ == "__main__":
    blocked, script, *args = sys.argv[1:]
    sys.meta_path.insert(0, Blocker(blocked.split(",")))
    for mod in list(sys.modules):  # nothing blocked may be imported already
        assert mod.split(".")[0] not in blocked.split(","), mod
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
