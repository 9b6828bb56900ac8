"""Run hrneo as on the smallest Python a router ships: OpenWrt's and Entware's
`python3-light` with `python3-logging` and `python3-yaml` (PyYAML without libyaml).

Every module those systems split into packages of their own is made impossible
to import (`python3-light` lacks them; the list is OpenWrt's
lang/python/python3/files/python3-package-*.mk), and PyYAML's C extension too.
"""

from __future__ import annotations

import sys

# Split out of python3-light (logging is not: hrneo needs python3-logging).
MISSING = (
    "asyncio", "cgi", "cgitb", "_codecs_cn", "_codecs_hk", "_codecs_iso2022", "_codecs_jp",
    "_codecs_kr", "_codecs_tw", "unicodedata", "ctypes", "_ctypes", "dbm", "_dbm", "_gdbm",
    "decimal", "_decimal", "_pydecimal", "distutils", "email", "lib2to3", "lzma", "_lzma",
    "multiprocessing", "_multiprocessing", "curses", "_curses", "ssl", "_ssl", "_hashlib",
    "pydoc", "pydoc_data", "readline", "sqlite3", "_sqlite3", "unittest", "urllib", "uuid",
    "_uuid", "venv", "webbrowser", "xml", "pyexpat", "_elementtree",
    "yaml._yaml", "_yaml",
)  # fmt: skip

# Prepended to `python -c`: the blocker, then hrneo's command line.
PRELUDE = f"""
import sys
MISSING = {MISSING!r}
class _NotInLightPython:
    def find_spec(self, name, path=None, target=None):
        if name in MISSING or name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in python3-light)")
        return None
sys.meta_path.insert(0, _NotInLightPython())
for _name in list(sys.modules):
    if _name in MISSING or _name.split(".")[0] in MISSING:
        del sys.modules[_name]
import runpy
sys.argv = ["hrneo", *sys.argv[1:]]
runpy.run_module("hrneo", run_name="__main__", alter_sys=True)
"""


def argv(*args: str) -> list[str]:
    """`python -c PRELUDE args...`: hrneo's command line on a light Python."""
    return [sys.executable, "-c", PRELUDE, *args]
