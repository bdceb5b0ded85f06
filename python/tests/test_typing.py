"""Type stubs and docstrings: what an editor completes and a type checker checks."""

import importlib.metadata
import inspect
import subprocess
import sys
from pathlib import Path

import vhdkit

HERE = Path(__file__).resolve().parent


def test_the_installed_package_ships_its_stubs_and_py_typed():
    files = {str(f) for f in importlib.metadata.files("vhdkit")}
    assert "vhdkit/__init__.pyi" in files
    assert "vhdkit/py.typed" in files


def test_the_stubs_describe_the_module_as_it_is(tmp_path):
    # mypy's stubtest: every name, signature and default of the stub against runtime.
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "vhdkit",
            "--allowlist",
            str(HERE / "stubtest-allowlist.txt"),
            "--ignore-unused-allowlist",
        ],
        capture_output=True,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


TYPED_SCRIPT = """
import vhdkit

def copy(src: str, dst: str) -> int:
    with vhdkit.open(src, strict=True, host_drive="files") as disk:
        head: bytes = disk.read(0, 512)
        size: int = disk.virtual_size
    task: vhdkit.Task = vhdkit.convert(src, dst, "dynamic", verify=True)
    for event in task.events():
        percent: int = event["percent"]
    report = task.join()
    copied: int = report["blocks_copied"]
    try:
        vhdkit.merge(dst)
    except vhdkit.WrongDiskType as e:
        code: int = e.hresult
    return size + len(head) + percent + code + copied
"""

WRONG_SCRIPT = """
import vhdkit
vhdkit.open("a.vhd").write(0, "text")
vhdkit.convert("a.vhd", "b.vhd", "qcow2")
vhdkit.info("a.vhd", stirct=True)
"""


def mypy(tmp_path, source):
    script = tmp_path / "script.py"
    script.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        capture_output=True,
        cwd=tmp_path,
        text=True,
    )


def test_a_script_using_the_api_type_checks(tmp_path):
    p = mypy(tmp_path, TYPED_SCRIPT)
    assert p.returncode == 0, p.stdout + p.stderr


def test_wrong_calls_are_caught_by_the_type_checker(tmp_path):
    p = mypy(tmp_path, WRONG_SCRIPT)
    assert p.returncode == 1
    assert 'Argument 2 to "write" of "Disk"' in p.stdout
    assert 'Argument 3 to "convert"' in p.stdout
    assert 'Unexpected keyword argument "stirct" for "info"' in p.stdout


def public_callables():
    for name in vhdkit.__all__ if hasattr(vhdkit, "__all__") else dir(vhdkit):
        obj = getattr(vhdkit, name)
        if name.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
            continue
        yield name, obj
        if inspect.isclass(obj) and obj.__module__ == "vhdkit" and not issubclass(obj, BaseException):
            for member, value in vars(obj).items():
                if not member.startswith("_"):
                    yield f"{name}.{member}", value


def test_every_public_function_class_and_member_has_a_docstring():
    missing = [name for name, obj in public_callables() if not (getattr(obj, "__doc__", None) or "").strip()]
    assert missing == []


def test_functions_have_text_signatures():
    assert str(inspect.signature(vhdkit.open)) == "(path, writable=False, **options)"
    assert "type=None" in str(inspect.signature(vhdkit.create))
    assert str(inspect.signature(vhdkit.Task.wait_for_completion)) == "(self, /, timeout_ms=-1)"


def test_every_function_and_member_of_the_stubs_is_used_by_the_tests():
    import ast

    stub = ast.parse((HERE.parent / "vhdkit" / "__init__.pyi").read_text())
    corpus = "".join(p.read_text() for p in HERE.glob("test_*.py") if p.name != "test_typing.py")
    unused = []
    for node in stub.body:
        if isinstance(node, ast.FunctionDef) and f"vhdkit.{node.name}(" not in corpus:
            unused.append(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                name = getattr(item, "name", None) or getattr(getattr(item, "target", None), "id", None)
                if name and not name.startswith("_") and f".{name}" not in corpus:
                    unused.append(f"{node.name}.{name}")
    assert unused == []
