"""No code in src/ can execute what it reads: no eval/exec, no pickle, no unsafe torch.load or yaml.load.

The check walks each module's syntax tree (so comments and docstrings that *say* "no pickle"
don't count) and flags:
  * calls of eval, exec, compile, __import__;
  * imports of pickle-family modules (pickle, _pickle, cPickle, cloudpickle, dill, joblib, shelve, marshal),
    and any other name containing "pickle" (e.g. np.load's allow_pickle=True);
  * torch.load without weights_only=True; yaml.load without a SafeLoader; yaml.unsafe_load/full_load;
  * trust_remote_code=True written as a constant (it must come from the user's flag).
Runtime: under a second.
"""

import ast
from pathlib import Path

import rekit

# This checkout's sources (not whichever copy happens to be installed); the package as a fallback.
SRC = Path(__file__).resolve().parents[1] / "src" / "rekit"
SRC = SRC if SRC.is_dir() else Path(rekit.__file__).resolve().parent
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """Every unsafe construct in `source` as 'file:line: what'."""
    found = []

    def flag(node, what):
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in modules:
                if m.split(".")[0] in PICKLE_MODULES:
                    flag(node, f"imports {m}")
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and "load" in {a.name for a in node.names}:
                flag(node, "imports torch.load by name (call torch.load(..., weights_only=True))")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if isinstance(node.func, ast.Name) and name in BANNED_CALLS:
                flag(node, f"calls {name}()")
            if name == "torch.load":
                weights_only = _keyword(node, "weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    flag(node, "torch.load without weights_only=True")
            if name in ("yaml.load", "yaml.load_all"):
                loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
                if loader is None or _dotted(loader).split(".")[-1] not in SAFE_YAML_LOADERS:
                    flag(node, f"{name} without a SafeLoader")
            if name in ("yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"):
                flag(node, f"calls {name}")
            remote = _keyword(node, "trust_remote_code")
            if isinstance(remote, ast.Constant) and remote.value is True:
                flag(node, "trust_remote_code=True hard-coded")
        elif isinstance(node, (ast.Name, ast.Attribute, ast.keyword, ast.alias, ast.arg)):
            ident = {ast.Name: "id", ast.Attribute: "attr", ast.keyword: "arg", ast.alias: "name", ast.arg: "arg"}
            value = getattr(node, ident[type(node)]) or ""
            if "pickle" in value.lower():
                if isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant) and node.value.value is False:
                    continue  # allow_pickle=False says the safe thing explicitly
                flag(node, f"uses {value}")
    return found


def test_src_has_no_unsafe_calls():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the scan did find the package
    problems = [p for f in files for p in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(SRC.parent)))]
    assert problems == []


def test_the_check_catches_each_unsafe_form():
    bad = '''
import pickle
from dill import loads
import numpy as np, torch, yaml
x = eval("1 + 1")
exec("y = 2")
torch.load("w.bin")
torch.load("w.bin", weights_only=False)
yaml.load(text)
yaml.load(text, Loader=yaml.FullLoader)
yaml.unsafe_load(text)
np.load("a.npy", allow_pickle=True)
AutoModel.from_pretrained(name, trust_remote_code=True)
from torch import load
'''
    found = unsafe_calls(bad)
    for what in ("imports pickle", "imports dill", "calls eval()", "calls exec()", "yaml.unsafe_load",
                 "uses allow_pickle", "trust_remote_code=True hard-coded", "imports torch.load by name"):
        assert any(what in f for f in found), (what, found)
    assert sum("torch.load without" in f for f in found) == 2
    assert sum("yaml.load without" in f for f in found) == 2
    good = '''
import torch, yaml
model.eval()
torch.load("w.pt", weights_only=True)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
np.load("a.npy", allow_pickle=False)
"""docstring: never pickle, never eval(...)"""  # comment: eval( pickle
AutoModel.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
torch.compile(model)
'''
    assert unsafe_calls(good) == []
