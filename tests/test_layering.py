"""The package's imports run one way: each module imports only modules of its own rank (without a
cycle) or of a lower one, lazy imports inside functions included. Read with ``ast`` from the
source: nothing is imported, so the test takes well under a second."""
import ast
import os
import os.path as osp
from typing import Dict, List, Set

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))  # (not from helpers, which imports torch)
PACKAGE = 'mmfocal'

# Lowest first. A module's rank is that of the longest prefix naming it (the module itself or a
# package above it); a module no prefix names fails the test: a new module must be placed here.
RANKS = {
    'mmfocal.errors': 0,
    'mmfocal.version': 0,
    'mmfocal.models.layers': 1,  # pure-torch attention and kernels
    'mmfocal.models.checkpoints': 2,  # checkpoint formats: official keys, classifiers, PaddleViT, tables
    'mmfocal.models': 3,  # backbones, dense_heads, losses, task_modules, test_time_augs
    'mmfocal.engine': 4,  # safe loading, atomic writes, exact resume, published weights
    'mmfocal.deployment': 4,
    'mmfocal.evaluation': 4,
    'mmfocal.apis': 5,  # the library's API: configs, models, conversions
    'mmfocal.analysis': 6,
    'mmfocal.visualization': 6,
    'mmfocal.benchmarking': 6,
    'mmfocal.demo_data': 6,
    'mmfocal.cli': 7,  # only what scripts share
    'mmfocal.registry': 8,
    'mmfocal.mim': 8,
    'mmfocal': 8,  # the package's __init__ only (its submodules are named above)
}


def package_modules() -> Dict[str, str]:
    """Each module of the package (a package by its own name), to its file."""
    modules = {}
    for folder, _, files in os.walk(osp.join(ROOT, PACKAGE)):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = osp.join(folder, name)
            module = osp.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
            modules[module[:-len('.__init__')] if name == '__init__.py' else module] = path
    return modules


def imported_modules(module: str, path: str, modules: Dict[str, str]) -> Set[str]:
    """The package's modules ``module`` imports anywhere in its file: ``from X import Y`` counts as
    an import of the module ``X.Y`` where there is one, else of ``X``; relative imports resolved."""
    is_package = path.endswith('__init__.py')
    imported = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module.rpartition('.')[0]
                for _ in range(node.level - 1):
                    base = base.rpartition('.')[0]
                source = '.'.join(part for part in (base, node.module) if part)
            else:
                source = node.module
            for alias in node.names:
                imported.add(f'{source}.{alias.name}' if f'{source}.{alias.name}' in modules else source)
    return {name for name in imported if name == PACKAGE or name.startswith(PACKAGE + '.')}


def import_graph() -> Dict[str, Set[str]]:
    modules = package_modules()
    return {module: imported_modules(module, path, modules) - {module} for module, path in modules.items()}


def rank_of(module: str):
    prefixes = [prefix for prefix in RANKS if module == prefix or module.startswith(prefix + '.')]
    if module != PACKAGE:
        prefixes = [prefix for prefix in prefixes if prefix != PACKAGE]
    return RANKS[max(prefixes, key=len)] if prefixes else None


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_every_module_has_a_rank():
    assert [module for module in sorted(import_graph()) if rank_of(module) is None] == []


def test_no_module_imports_a_higher_rank():
    upward = [f'{module} (rank {rank_of(module)}) imports {target} (rank {rank_of(target)})'
              for module, targets in sorted(import_graph().items()) for target in sorted(targets)
              if rank_of(target) is not None and rank_of(module) is not None and rank_of(target) > rank_of(module)]
    assert upward == []


def test_no_import_cycle():
    assert find_cycles(import_graph()) == []


def test_the_library_api_does_not_import_the_scripts_glue():
    graph = import_graph()
    assert 'mmfocal.cli' not in graph['mmfocal.apis']
    assert 'mmfocal.engine.pretrained' not in graph  # the formats live in mmfocal.models.checkpoints


def test_the_checker_sees_lazy_relative_and_upward_imports(tmp_path):
    """The graph the tests above read: an import inside a function counts, relative ones resolve."""
    graph = import_graph()
    # mmfocal/__init__.py's `from . import engine` and a lazy one made up here.
    assert 'mmfocal.engine' in graph['mmfocal']
    source = tmp_path / 'lazy.py'
    source.write_text('def f():\n    from ..cli import exit_on_error\n    import mmfocal.apis\n')
    modules = package_modules()
    assert imported_modules('mmfocal.models.lazy', str(source), modules) == {'mmfocal.cli', 'mmfocal.apis'}
    assert find_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    assert rank_of('mmfocal.models.checkpoints.loading') == 2 and rank_of('mmfocal.models.backbones') == 3
    assert rank_of('mmfocal.unplaced') is None
