"""No module of recindex imports itself back through others (the layers between packages are
import-linter's contract in pyproject.toml, checked by `lint-imports` in .ci/run)."""

import grimp
import networkx as nx  # torch's own dependency


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("recindex")
    imports = nx.DiGraph(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
    )
    cycles = [sorted(group) for group in nx.strongly_connected_components(imports) if len(group) > 1]
    assert cycles == []
