"""The Python examples of README.md and python/README.md run as written."""

import asyncio
import re

import pytest

import vhdkit
from helpers import REPO

READMES = [REPO / "README.md", REPO / "python" / "README.md"]


def python_blocks(path):
    text = path.read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_readme_python_examples_run(readme, tmp_path, monkeypatch):
    blocks = python_blocks(readme)
    assert blocks, f"{readme} has a Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        namespace = {}
        exec(compile(block, str(readme), "exec"), namespace)
        if "flatten_all" in namespace:
            vhdkit.create("a.vhd", size=8 << 20)
            vhdkit.create("b.vhd", parent="a.vhd")
            reports = asyncio.run(namespace["flatten_all"](["b.vhd"]))
            assert reports[0]["operation"] == "merge-to"
