"""Which names a cell reads from the notebook and which it binds (``_closure``)."""

from __future__ import annotations

import builtins
import math
import textwrap
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from remotecell.kernel_magics._closure import (
    CellNames,
    analyse,
    capture,
    is_ipython_name,
    python_source,
)


def names(cell: str) -> CellNames:
    return analyse(textwrap.dedent(cell))


def free(cell: str) -> set[str]:
    return set(names(cell).free)


def assigned(cell: str) -> set[str]:
    return set(names(cell).assigned)


def ipython(cell: str, shell: InteractiveShell) -> CellNames:
    return analyse(python_source(textwrap.dedent(cell), shell))


# -- what the cell reads ---------------------------------------------------------------


def test_top_level_reads_and_binds() -> None:
    cell = "y = f(x) + z.attr\n"
    assert free(cell) == {"f", "x", "z"}
    assert assigned(cell) == {"y"}


def test_a_name_read_and_assigned_travels() -> None:
    assert names("x = x + 1") == CellNames(free=("x",), assigned=("x",))


@pytest.mark.parametrize("cell", ["x += 1", "x -= 1", "x @= m", "x //= 2"])
def test_augmented_assignment_reads_the_name(cell: str) -> None:
    assert "x" in free(cell)
    assert "x" in assigned(cell)


def test_del_reads_the_name() -> None:
    assert "gone" in free("del gone")


def test_augmented_assignment_of_a_local_reads_nothing() -> None:
    cell = """
        def f():
            c = 0
            c += 1
            return c
    """
    assert free(cell) == set()


def test_augmented_assignment_of_a_declared_global_reads_it() -> None:
    cell = """
        def bump():
            global counter
            counter += 1
    """
    assert free(cell) == {"counter"}
    assert assigned(cell) == {"bump", "counter"}


def test_attribute_and_subscript_targets_read_their_object() -> None:
    assert free("obj.attr = 1\nitems[0] += 2\n") == {"obj", "items"}
    assert assigned("obj.attr = 1\nitems[0] += 2\n") == set()


def test_names_read_inside_nested_functions() -> None:
    cell = """
        def outer(a):
            b = 1
            def inner():
                return a + b + deep
            return inner
    """
    assert free(cell) == {"deep"}
    assert assigned(cell) == {"outer"}


def test_lambda_reads_its_globals_not_its_parameters() -> None:
    cell = "h = lambda q, r=default: q + r + w\n"
    assert free(cell) == {"default", "w"}
    assert assigned(cell) == {"h"}


def test_class_body_and_methods() -> None:
    cell = """
        @decorate
        class C(Base, metaclass=Meta):
            attr = v
            def m(self, arg: Ann) -> Ret:
                return u + self.attr
    """
    assert free(cell) == {"decorate", "Base", "Meta", "v", "Ann", "Ret", "u"}
    assert assigned(cell) == {"C"}


def test_methods_do_not_see_class_attributes() -> None:
    # in a method (and a comprehension in a class body) `a` is a global, not C.a
    cell = """
        class C:
            a = 1
            b = [a for _ in range(3)]
            def m(self):
                return a
    """
    assert "a" in free(cell)


def test_comprehension_reads_its_iterable_not_its_variable() -> None:
    cell = "squares = [i * k for i in items if i > lim]\n"
    assert free(cell) == {"items", "k", "lim"}
    assert assigned(cell) == {"squares"}


def test_nested_comprehension_and_dict_comprehension() -> None:
    cell = "grid = {k: [v * j for j in row] for k, row in table.items()}\n"
    assert free(cell) == {"table", "v"}
    assert "k" not in free(cell) and "row" not in free(cell) and "j" not in free(cell)


def test_generator_expression() -> None:
    assert free("total = sum(x * w for x in xs)") == {"sum", "w", "xs"}


def test_default_values_and_decorators_are_read_when_defined() -> None:
    cell = """
        @cache
        def f(x=default, *, y=kw_default):
            return x
    """
    assert free(cell) == {"cache", "default", "kw_default"}


def test_global_declaration_read_in_function() -> None:
    cell = """
        def f():
            global g
            return g
    """
    assert free(cell) == {"g"}
    assert assigned(cell) == {"f"}


def test_global_declaration_only_assigned_is_not_read() -> None:
    # reading it would ship the notebook's value for nothing (or fail on a lock)
    cell = """
        def reset():
            global state
            state = 0
    """
    assert free(cell) == set()
    assert assigned(cell) == {"reset", "state"}


def test_top_level_global_statement() -> None:
    assert names("global g\ng = 1\n") == CellNames(free=(), assigned=("g",))


def test_nonlocal_is_not_a_global() -> None:
    cell = """
        def f():
            n = 0
            def g():
                nonlocal n
                n += 1
            return g
    """
    assert free(cell) == set()


# -- what the cell binds ---------------------------------------------------------------


def test_import_binds_the_alias() -> None:
    assert names("import numpy as np") == CellNames(free=(), assigned=("np",))


def test_dotted_import_binds_the_top_package() -> None:
    assert names("import os.path") == CellNames(free=(), assigned=("os",))


def test_from_import_binds_each_name() -> None:
    assert assigned("from os import path as p, sep") == {"p", "sep"}


def test_for_and_with_targets() -> None:
    cell = """
        for i, (a, b) in enumerate(pairs):
            pass
        with open(fn) as fh, lock as _held:
            pass
    """
    assert assigned(cell) == {"i", "a", "b", "fh", "_held"}
    assert free(cell) == {"enumerate", "pairs", "open", "fn", "lock"}


def test_walrus_binds_at_top_level() -> None:
    assert names("if (n := len(data)) > 3:\n    pass\n") == CellNames(
        free=("len", "data"), assigned=("n",)
    )


def test_walrus_in_comprehension_binds_the_cell_name_without_reading_it() -> None:
    assert names("[last := i for i in r]") == CellNames(free=("r",), assigned=("last",))


def test_except_match_and_starred_targets() -> None:
    cell = """
        try:
            pass
        except Error as err:
            pass
        match point:
            case Point(x=px):
                pass
            case [first, *rest]:
                pass
        head, *tail = seq
    """
    assert assigned(cell) >= {"err", "px", "first", "rest", "head", "tail"}
    assert free(cell) == {"Error", "point", "Point", "seq"}


def test_def_class_and_annotated_names_are_bound() -> None:
    cell = """
        def f():
            pass
        class K:
            pass
        a: int = 3
        async def co():
            await aw
    """
    assert assigned(cell) == {"f", "K", "a", "co"}
    assert free(cell) == {"int", "aw"}


def test_syntax_error_is_raised() -> None:
    with pytest.raises(SyntaxError) as err:
        analyse("x = (1,\n")
    assert err.value.lineno == 1


def test_symbol_table_errors_are_syntax_errors() -> None:
    with pytest.raises(SyntaxError, match="nonlocal"):
        analyse("nonlocal x\n")


# -- IPython syntax --------------------------------------------------------------------


def test_shell_escape_becomes_python(shell: InteractiveShell) -> None:
    source = python_source("!echo hi\n", shell)
    assert "get_ipython().system" in source
    assert ipython("!echo hi\n", shell) == CellNames(free=("get_ipython",), assigned=())


def test_shell_output_assignment(shell: InteractiveShell) -> None:
    assert ipython("files = !ls\n", shell) == CellNames(free=("get_ipython",), assigned=("files",))


def test_shell_expansions_read_names(shell: InteractiveShell) -> None:
    cell = "!echo $word {count + 1} {path!r} $$HOME $obj.attr\n"
    assert set(ipython(cell, shell).free) == {"get_ipython", "word", "count", "path", "obj"}


def test_a_bad_expansion_is_left_alone(shell: InteractiveShell) -> None:
    assert ipython("!echo {\n", shell).free == ("get_ipython",)


def test_line_magic_code_reads_and_binds(shell: InteractiveShell) -> None:
    result = ipython("%time y = f(x)\n", shell)
    assert set(result.free) == {"get_ipython", "f", "x"}
    assert result.assigned == ("y",)


def test_timeit_options_are_skipped_and_bindings_stay_inside(shell: InteractiveShell) -> None:
    result = ipython("%timeit -n 10 -r 3 z = g(h)\n", shell)
    assert set(result.free) == {"get_ipython", "g", "h"}
    assert result.assigned == ()


def test_cell_magic_body_reads_and_binds(shell: InteractiveShell) -> None:
    result = ipython("%%time\nq = r + 1\n!echo {s}\n", shell)
    assert set(result.free) == {"get_ipython", "r", "s"}
    assert result.assigned == ("q",)


def test_capture_binds_its_output_name(shell: InteractiveShell) -> None:
    result = ipython("%%capture --no-stderr captured\nprint(v)\n", shell)
    assert set(result.free) == {"get_ipython", "print", "v"}
    assert result.assigned == ("captured",)


def test_other_line_magics_read_their_expansions(shell: InteractiveShell) -> None:
    assert set(ipython("%cd {where}\n", shell).free) == {"get_ipython", "where"}
    assert ipython("a = %who_ls\n", shell) == CellNames(free=("get_ipython",), assigned=("a",))


def test_ipython_syntax_error_in_python_part(shell: InteractiveShell) -> None:
    with pytest.raises(SyntaxError):
        ipython("!echo hi\nx = (\n", shell)


def test_without_a_shell_the_source_is_unchanged() -> None:
    assert python_source("x = 1\n", None) == "x = 1\n"


# -- capture ---------------------------------------------------------------------------


def test_capture_takes_only_names_the_notebook_binds() -> None:
    ns = {"x": 1, "unused": 2}
    assert capture(names("y = x + missing"), ns) == {"x": 1}


def test_capture_keeps_the_notebook_objects() -> None:
    data = [1, 2, 3]
    assert capture(names("n = len(data)"), {"data": data})["data"] is data


@pytest.mark.parametrize(
    "name", ["_", "__", "___", "_i", "_ii", "_iii", "_i1", "_12", "_oh", "_ih", "_dh"]
)
def test_ipython_history_names_are_never_captured(name: str) -> None:
    assert is_ipython_name(name)
    assert capture(names(f"v = {name}"), {name: "history"}) == {}


@pytest.mark.parametrize(
    "name", ["In", "Out", "get_ipython", "exit", "quit", "_exit_code", "__name__", "__builtins__"]
)
def test_ipython_and_module_names_are_never_captured(name: str) -> None:
    assert capture(names(f"v = {name}"), {name: object()}) == {}


def test_ipython_internals_of_a_real_shell_are_not_captured(shell: InteractiveShell) -> None:
    shell.run_cell("1 + 1", store_history=True)
    shell.run_cell("!true", store_history=True)
    cell = "v = (_, __, _i, _i1, _1, Out, In, get_ipython, exit, _oh, _exit_code, __name__)\n"
    assert capture(ipython(cell, shell), shell.user_ns) == {}


def test_names_hidden_from_who_travel(shell: InteractiveShell) -> None:
    # %pylab binds np, plt, sqrt, ... in user_ns_hidden: the cell needs them all the same
    shell.user_ns["np"] = shell.user_ns_hidden["np"] = math
    assert capture(names("np.sqrt(2)"), shell.user_ns) == {"np": math}


def test_star_imports_are_noted_as_binding_names_known_only_after_the_run() -> None:
    assert names("from math import *").star
    assert names("import math\nfrom math import pi").star is False


def test_a_pylab_magic_is_noted_for_the_kernel_to_bind_its_names(shell: InteractiveShell) -> None:
    assert ipython("%pylab inline\nx = 1", shell).pylab == ("inline",)
    assert ipython("%pylab --no-import-all", shell).pylab == ("--no-import-all",)
    assert ipython("%matplotlib inline\nx = 1", shell).pylab == ()


def test_builtins_are_not_captured() -> None:
    ns = {"len": builtins.len, "print": builtins.print}
    assert capture(names("print(len(a))"), {**ns, "a": [1]}) == {"a": [1]}


def test_a_shadowed_builtin_is_captured() -> None:
    def len(obj: Any) -> int:
        return 42

    assert capture(names("n = len(a)"), {"len": len, "a": []}) == {"len": len, "a": []}


def test_a_user_name_like_ipythons_is_captured() -> None:
    # only exact IPython patterns are left out
    ns = {"_private": 1, "In_": 2, "_index": 3}
    assert capture(names("v = _private + In_ + _index"), ns) == ns


def test_capture_order_follows_first_use() -> None:
    ns = {"b": 1, "a": 2}
    assert list(capture(names("v = a + b"), ns)) == ["a", "b"]
