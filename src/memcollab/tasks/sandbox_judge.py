"""Verdict integrity inside the sandbox: what the harness uses to judge a candidate's tests.

Loaded by `sandbox_harness.py` from its file (standard library only, never memcollab). The
tests are compiled with their comparison operands, and the call results, names and asserted
values inside an `assert`, routed through `Judge.guard`, which rejects values that could fake
a comparison; `Judge.tampering` finds replaced builtins and library functions. What the
guard rejects, and what it cannot see: the docstring of `sandbox.py`.
"""

from __future__ import annotations

import ast
import builtins
import collections
import gc
import os
import sys
import types
from typing import Any

_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class built at run time


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Dunders through which an object can pass a comparison whatever the expected value: the
# comparisons, truth and membership, class spoofing for isinstance, and binary arithmetic
# (`abs(x - expected) < eps` with a `__sub__` returning 0). Conversions, iteration or
# attribute access yield definite values, which are judged in turn.
_RISKY_DUNDERS = _words(
    "__eq__ __ne__ __lt__ __le__ __gt__ __ge__ __bool__ __contains__ __class__ "
    "__instancecheck__ __call__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ "
    "__truediv__ __rtruediv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __divmod__ "
    "__rdivmod__ __pow__ __rpow__ __matmul__ __rmatmul__ __and__ __rand__ __or__ __ror__ "
    "__xor__ __rxor__ __lshift__ __rlshift__ __rshift__ __rrshift__"
)
# Builtins a test typically uses to judge a value; a candidate defining one of these names
# would replace it for the tests.
_JUDGE_BUILTINS = _words(
    "abs all any bool callable dict enumerate filter float frozenset getattr hasattr hash id "
    "int isinstance issubclass iter len list map max min next print range repr reversed "
    "round set sorted str sum tuple type zip AssertionError BaseException Exception "
    "__import__ __build_class__ eval exec compile globals vars"
)
GUARD_NAME = "__memcollab_guard__"


class _Cheat(Exception):
    """Raised in a test when a value or the environment was forged to pass it."""


class GuardInserter(ast.NodeTransformer):
    """Route comparison operands, and call results and names inside asserts, to the guard."""

    def __init__(self) -> None:
        self.in_assert = 0

    def _wrap(self, node: ast.expr) -> ast.expr:
        call = ast.Call(ast.Name(GUARD_NAME, ast.Load()), [node], [])
        return ast.copy_location(call, node)

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        self.in_assert += 1
        node.test = self.visit(node.test)
        self.in_assert -= 1
        node.test = self._wrap(node.test)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.Compare:
        self.generic_visit(node)
        node.left = self._wrap(node.left)
        node.comparators = [self._wrap(c) for c in node.comparators]
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        if isinstance(node.func, ast.Attribute):
            node.func.value = self.visit(node.func.value)
        elif not isinstance(node.func, ast.Name):
            node.func = self.visit(node.func)
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        return self._wrap(node) if self.in_assert else node

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if self.in_assert and isinstance(node.ctx, ast.Load) and node.id != GUARD_NAME:
            return self._wrap(node)
        return node


class _Canary:
    """A fresh object no honest value equals."""

    __slots__ = ()


class Judge:
    """Decides whether values and the environment of a test run are honest.

    Trusted code: the code objects compiled from the setup and the tests; code from files
    under the interpreter's, sys.path's and the harness's directories (never the work
    directory); and code compiled from strings, unless the candidate's own code compiled
    it (an audit hook records those file names). Built before the candidate runs.
    """

    def __init__(self, workdir: str, trusted_codes: list[Any]) -> None:
        self.types = types
        self.builtins_dict = builtins.__dict__
        self.builtins_snapshot = dict(builtins.__dict__)
        self.modules = sys.modules
        self.canary = _Canary()
        self.workdir = os.path.join(os.path.realpath(workdir), "")
        roots = [*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
        roots.append(os.path.dirname(os.path.realpath(__file__)))
        real = {os.path.join(os.path.realpath(r), "") for r in roots if r and os.path.isabs(r)}
        self.roots = tuple(r for r in real if r != "/" and not r.startswith(self.workdir))
        self.codes: dict[int, Any] = {}
        for code in trusted_codes:
            self._trust(code)
        self.file_cache: dict[str, bool] = {}
        # File names the candidate compiled code under (exec, eval, compile called from its
        # own code), recorded by an audit hook, which the candidate cannot remove.
        self.untrusted_files = {"<candidate>"}
        self.in_hook = False
        sys.addaudithook(self._audit)
        # C methods and attributes of classes: they check the type of what they act on.
        self.c_kinds = frozenset(
            {
                types.WrapperDescriptorType,
                types.MethodDescriptorType,
                types.ClassMethodDescriptorType,
                types.GetSetDescriptorType,
                types.MemberDescriptorType,
            }
        )
        self.type_dict = vars(type)["__dict__"].__get__
        self.type_flags = vars(type)["__flags__"].__get__
        self.type_mro = vars(type)["__mro__"].__get__
        self.module_dict = vars(types.ModuleType)["__dict__"].__get__
        self.leaves = frozenset({int, float, complex, bool, str, bytes, type(None)})
        self.function_type = types.FunctionType
        self.type_name = vars(type)["__qualname__"].__get__
        self.referents = gc.get_referents
        # Static containers whose comparison reads the objects they hold.
        empty: dict[Any, Any] = {}
        self.state_types: tuple[type, ...] = (
            collections.deque,
            types.SimpleNamespace,
            types.MappingProxyType,
            slice,
            type(empty.keys()),
            type(empty.values()),
            type(empty.items()),
        )
        # (id(class attribute), name) -> (that attribute, the library classes defining it)
        self.owners: dict[tuple[int, str], tuple[Any, tuple[type, ...]]] = {}

    def _trust(self, code: Any) -> None:
        self.codes[id(code)] = code
        for const in code.co_consts:
            if isinstance(const, self.types.CodeType):
                self._trust(const)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "compile" or self.in_hook:
            return
        self.in_hook = True
        try:
            caller = sys._getframe(1)
            if not self.code_trusted(caller.f_code) and len(args) > 1:
                filename = args[1]
                if isinstance(filename, str | bytes):
                    self.untrusted_files.add(os.fsdecode(filename))
        except (ValueError, TypeError):
            pass
        finally:
            self.in_hook = False

    def code_trusted(self, code: Any) -> bool:
        """Compiled from the setup or tests, or from an installed file, or from a string by
        such code (frozen modules, code generated by libraries)."""
        if self.codes.get(id(code)) is code:
            return True
        filename = code.co_filename
        if filename in self.untrusted_files:
            return False
        cached = self.file_cache.get(filename)
        if cached is None:
            if filename.startswith("<"):
                cached = True
            else:
                # A file of the interpreter, its site-packages or the harness (the run's uid
                # cannot write there; it may not even be able to read there).
                real = os.path.realpath(filename) if os.path.isabs(filename) else ""
                inside = real.startswith(self.roots) and not real.startswith(self.workdir)
                cached = bool(real) and inside
            self.file_cache[filename] = cached
        return cached

    def heap(self, cls: type) -> bool:
        """A class built at run time (not a static C type, which nothing can change)."""
        return bool(self.type_flags(cls) & _HEAPTYPE)

    def owned(self, mro: tuple[type, ...], name: str, entry: Any, func: Any) -> bool:
        """Whether `entry` (found under `name`, `func` its function) is held there by one of
        the value's own classes (`mro`) that library code defines: inherited, not borrowed."""
        key = (id(entry), name)
        hit = self.owners.get(key)
        if hit is None or hit[0] is not entry:
            hit = (entry, self.find_owners(name, entry, func))
            self.owners[key] = hit
        if any(base is owner for owner in hit[1] for base in mro):
            return True
        # A library class holding a function of another module (`__call__ =
        # staticmethod(sympify)`, functools.total_ordering): the class must be defined in the
        # module its own methods come from (compiled from an installed file). A value whose
        # comparison is such code is then sealed (`seal`): its classes hold nothing else.
        for klass in mro:
            if not self.heap(klass) or self.type_dict(klass).get(name) is not entry:
                continue
            # A class defined inside a library function, which holds its own method.
            qualname = self.type_name(klass)
            if "<locals>" in qualname and func.__code__.co_qualname == f"{qualname}.{name}":
                return True
            for namespace in self.home_modules(klass):
                if any(value is klass for value in list(dict.values(namespace))):
                    return True
        return False

    def home_modules(self, klass: type) -> list[dict[str, Any]]:
        """Globals of the class's own methods that were compiled from installed files."""
        found: dict[int, dict[str, Any]] = {}
        for entry in list(self.type_dict(klass).values()):
            kind = type(entry)
            func = entry.__func__ if kind is staticmethod or kind is classmethod else entry
            if (
                type(func) is self.function_type
                and os.path.isabs(func.__code__.co_filename)
                and self.code_trusted(func.__code__)
            ):
                found[id(func.__globals__)] = func.__globals__
        return list(found.values())

    def find_owners(self, name: str, entry: Any, func: Any) -> tuple[type, ...]:
        """Classes of the function's module (and of the modules of what it wraps) holding
        `entry` under `name`."""
        found: list[type] = []
        scanned: set[int] = set()
        for _ in range(8):
            if type(func) is not self.function_type:
                break
            namespace = func.__globals__
            if id(namespace) not in scanned:
                scanned.add(id(namespace))
                for value in list(dict.values(namespace)):
                    if (
                        issubclass(type(value), type)
                        and self.heap(value)
                        and self.type_dict(value).get(name) is entry
                    ):
                        found.append(value)
            func = dict.get(func.__dict__, "__wrapped__")
        return tuple(found)

    def risky_entry(self, mro: tuple[type, ...], name: str, entry: Any) -> str | None:
        """How a comparison, truth or arithmetic dunder found in a class behaves: "c" (a C
        slot of one of its bases), "python" (library code), None (anything else)."""
        kind = type(entry)
        if entry is None:
            return "c"
        if kind in self.c_kinds:
            # A C slot of one of the class's bases under its own name behaves as inherited
            # (`__ne__ = object.__ne__`); under another name (`__eq__ = str.__ne__`) it forges.
            objclass = entry.__objclass__
            return "c" if any(k is objclass for k in mro) and entry.__name__ == name else None
        if kind is staticmethod or kind is classmethod:
            funcs = [entry.__func__]
        elif kind is property:
            funcs = [f for f in (entry.fget, entry.fset, entry.fdel) if f is not None]
        elif kind is self.function_type:
            funcs = [entry]
        else:
            return None
        trusted = all(
            type(f) is self.function_type and self.code_trusted(f.__code__) for f in funcs
        )
        # Library code counts only where the library put it: a method borrowed from an
        # unrelated class (`__eq__ = fractions.Fraction.__eq__` on an int subclass) would
        # compare attributes the candidate chose.
        if trusted and funcs and self.owned(mro, name, entry, funcs[0]):
            return "python"
        return None

    def comparison_code(self, cls: type) -> str | None:
        """Where the comparison, truth and arithmetic of `cls`'s instances come from: "c"
        (C slots only), "python" (some from library Python code), None (untrusted code)."""
        if not self.heap(cls):  # a static (C) type: cannot be changed
            return "c"
        # Read through type's own descriptors: a metaclass cannot fake them.
        mro = self.type_mro(cls)
        found = "c"
        for klass in mro:
            if not self.heap(klass):
                continue
            namespace = self.type_dict(klass)
            for name in _RISKY_DUNDERS.intersection(namespace):
                kind = self.risky_entry(mro, name, namespace[name])
                if kind is None:
                    return None
                if kind == "python":
                    found = kind
        return found

    def type_trusted(self, cls: type) -> bool:
        """Whether `cls`'s comparison, truth and arithmetic come from C or library code."""
        return self.comparison_code(cls) is not None

    def seal(self, cls: type, stack: list[Any], sealed: set[int]) -> None:
        """Raise _Cheat unless every attribute of `cls`'s own classes is library code (or
        data, pushed to `stack` to be judged): a comparison the library wrote in Python may
        read or call any of them (`UserString.__eq__` reads `self.data`)."""
        for klass in self.type_mro(cls):
            if id(klass) in sealed or not self.heap(klass):
                continue
            sealed.add(id(klass))
            namespace = self.type_dict(klass)
            for name in list(namespace):
                if name not in _RISKY_DUNDERS and not self.attribute_trusted(
                    namespace[name], stack, sealed
                ):
                    raise _Cheat(
                        f"{self.type_name(klass)}.{name} is not library code, and a "
                        "comparison the library wrote in Python may use it"
                    )

    def attribute_trusted(self, entry: Any, stack: list[Any], sealed: set[int]) -> bool:
        """Whether a class attribute is library code; data is pushed to `stack`."""
        kind = type(entry)
        if kind in self.leaves or kind in self.c_kinds:
            return True
        if kind is staticmethod or kind is classmethod:
            return self.attribute_trusted(entry.__func__, stack, sealed)
        if kind is property:
            return all(
                f is None or self.attribute_trusted(f, stack, sealed)
                for f in (entry.fget, entry.fset, entry.fdel)
            )
        if kind is self.function_type:
            return self.code_trusted(entry.__code__)
        if issubclass(kind, type):  # a class: calling it runs its own code
            if self.heap(entry):
                if self.comparison_code(entry) is None:
                    return False
                self.seal(entry, stack, sealed)
            return True
        if callable(entry) or any("__get__" in self.type_dict(k) for k in self.type_mro(kind)):
            # A callable object or a descriptor: its class's code and what it holds decide.
            if self.heap(kind):
                if self.comparison_code(kind) is None:
                    return False
                self.seal(kind, stack, sealed)
            for ref in self.referents(entry):
                if type(ref) is self.function_type:
                    if not self.code_trusted(ref.__code__):
                        return False
                elif not issubclass(type(ref), type):
                    stack.append(ref)
            return True
        stack.append(entry)
        return True

    def check(self, value: Any, budget: int = 1_000_000) -> None:
        """Raise _Cheat if `value` (or anything it contains) can fake a comparison."""
        leaves = self.leaves
        stack = [value]
        seen: set[int] = set()
        sealed: set[int] = set()
        while stack and budget > 0:
            budget -= 1
            obj = stack.pop()
            cls = type(obj)
            if cls in leaves:
                continue
            code = self.comparison_code(cls)
            if code is None:
                raise _Cheat(
                    f"a {self.type_name(cls)!r} value overrides comparison, truth or arithmetic "
                    "with code that does not come from the tests or the installed library"
                )
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if code == "python" or isinstance(obj, self.state_types):
                # Its comparison reads what it holds (a library comparison written in
                # Python: its state and its classes' attributes; a deque: its items).
                if code == "python":
                    self.seal(cls, stack, sealed)
                stack.extend(r for r in self.referents(obj) if not issubclass(type(r), type))
            if isinstance(obj, list):
                stack.extend(list.__iter__(obj))
            elif isinstance(obj, tuple):
                stack.extend(tuple.__iter__(obj))
            elif isinstance(obj, set | frozenset):
                stack.extend(set.__iter__(obj) if isinstance(obj, set) else frozenset.__iter__(obj))
            elif isinstance(obj, dict):
                for key, item in dict.items(obj):
                    stack.append(key)
                    stack.append(item)
            else:
                try:
                    equal = obj == self.canary
                except Exception:  # noqa: BLE001 - an honest value may refuse the comparison
                    continue
                if equal is True:
                    raise _Cheat(f"a {self.type_name(cls)!r} value claims to equal anything")

    def guard(self, value: Any) -> Any:
        self.check(value)
        return value

    def restore_builtins(self) -> list[str]:
        """Put back replaced builtins; return their names."""
        replaced = [
            name
            for name, original in self.builtins_snapshot.items()
            if self.builtins_dict.get(name, _Canary) is not original
        ]
        dict.update(self.builtins_dict, self.builtins_snapshot)
        return replaced

    def tampering(self, candidate_module: dict[str, Any], test_names: set[str]) -> str | None:
        """Restore replaced builtins, then say what the candidate forged, if anything."""
        replaced = self.restore_builtins()
        if replaced:
            return f"the code replaced builtins: {', '.join(sorted(replaced)[:8])}"
        shadowed = sorted(
            name
            for name in _JUDGE_BUILTINS & test_names
            if name in candidate_module
            and candidate_module[name] is not self.builtins_snapshot.get(name)
        )
        if shadowed:
            return f"the code rebinds builtins the tests use: {', '.join(shadowed)}"
        types = self.types
        for mod_name, module in list(self.modules.items()):
            if isinstance(module, types.ModuleType):
                if self.module_dict(module) is candidate_module:
                    continue
                namespace = self.module_dict(module)
            else:
                namespace = getattr(module, "__dict__", None)
                if not isinstance(namespace, dict):
                    continue
            for attr, value in list(namespace.items()):
                func = value.__func__ if type(value) is types.MethodType else value
                if type(func) is types.FunctionType:
                    if not self.code_trusted(func.__code__):
                        return f"the code replaced {mod_name}.{attr}"
                elif (
                    not isinstance(value, type)
                    and not self.type_trusted(type(value))
                    and callable(value)
                ):
                    return f"the code replaced {mod_name}.{attr}"
        return None
