"""Packaging: the dependencies in setup.cfg cover what the code imports, and the
LICENSE and CITATION.cff files agree with setup.cfg.

`pip install -e .` installs `install_requires` only, and the README's first
command runs with exactly that. So every third-party module imported at module
level anywhere under tfcell/, reproductions/ or configs/ must come from
`install_requires`; an optional package (keras_tuner) may only be imported
inside a function and must be in its extra. The next missing core dependency
fails here instead of on a user's fresh machine.
"""

import ast
import configparser
import importlib.metadata
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("tfcell", "reproductions", "configs")
FIRST_PARTY = {"tfcell", "reproductions", "configs"}

# Optional top-level modules: imported inside a function only, from this extra.
OPTIONAL = {"keras_tuner": "tuner", "umap": "umap"}

# Import name -> distribution, for when the package is not installed here
# (importlib.metadata.packages_distributions() is asked first).
KNOWN_DISTRIBUTIONS = {
    "PIL": "pillow",
    "absl": "absl-py",
    "keras_tuner": "keras-tuner",
    "ml_collections": "ml-collections",
    "sklearn": "scikit-learn",
    "umap": "umap-learn",
    "yaml": "pyyaml",
}

# Dependencies that are used without an import statement of theirs.
INDIRECT = {
    # The callback imports TensorBoard's summary writer; TF 2.21 no longer
    # installs TensorBoard.
    "keras.callbacks.TensorBoard": "tensorboard",
}

# The first Keras release with each API that needs more than Keras 3.0
# (read from the 3.7, 3.8 and 3.9 wheels' keras/api/*/__init__.py).
KERAS_API_SINCE = {
    "keras.layers.RandomGaussianBlur": (3, 9),
    "ops.rot90": (3, 9),
    "keras.layers.RandomShear": (3, 8),
    "keras.layers.RandomHue": (3, 8),
    "keras.layers.RandomSaturation": (3, 8),
}

# The five papers the reproductions and losses implement (first author, year).
PAPERS = {
    ("Mahbub", 2024),
    ("Goswami", 2020),
    ("Umer", 2023),
    ("Panteli", 2021),
    ("Salehi", 2022),
}


def _normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(value):
    """Requirement lines of a setup.cfg list -> {normalised name: line}."""
    out = {}
    for line in value.strip().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out[_normalise(re.match(r"[A-Za-z0-9._-]+", line).group(0))] = line
    return out


def _setup_cfg():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return config


def _distribution(module):
    installed = importlib.metadata.packages_distributions().get(module)
    if installed:
        return _normalise(installed[0])
    return _normalise(KNOWN_DISTRIBUTIONS.get(module, module))


def _python_files():
    for top in SCANNED:
        for dirpath, _, filenames in os.walk(os.path.join(ROOT, top)):
            for filename in sorted(filenames):
                if filename.endswith(".py"):
                    yield os.path.join(dirpath, filename)


def _imports(path):
    """Yields (top-level module, inside_a_function, line) for each absolute import."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name.split(".")[0], in_function, child.lineno
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module.split(".")[0], in_function, child.lineno
            yield from visit(child, nested)

    yield from visit(tree, False)


def _third_party_imports():
    """{top-level module: [(relative path, line, inside_a_function), ...]}."""
    found = {}
    for path in _python_files():
        siblings = {os.path.splitext(name)[0] for name in os.listdir(os.path.dirname(path))}
        for module, in_function, line in _imports(path):
            if module in sys.stdlib_module_names or module in FIRST_PARTY | siblings:
                continue
            found.setdefault(module, []).append((os.path.relpath(path, ROOT), line, in_function))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    config = _setup_cfg()
    core = _requirements(config["options"]["install_requires"])
    extras = {
        name: _requirements(value) for name, value in config["options.extras_require"].items()
    }
    problems = []
    for module, places in sorted(_third_party_imports().items()):
        distribution = _distribution(module)
        if distribution in core:
            continue
        if module in OPTIONAL:
            extra = OPTIONAL[module]
            if distribution not in extras.get(extra, {}):
                problems.append(f"{module}: optional, but not in the [{extra}] extra")
            problems += [
                f"{path}:{line}: optional {module} imported at module level "
                "(import it inside the function that needs it)"
                for path, line, in_function in places
                if not in_function
            ]
            continue
        where = ", ".join(f"{path}:{line}" for path, line, _ in places[:3])
        problems.append(
            f"{module} (distribution {distribution!r}) is imported ({where}) but is not in "
            "setup.cfg install_requires: add it there, or make it optional (import inside a "
            "function, list it in OPTIONAL here and in an extra)"
        )
    assert not problems, "\n".join(problems)


def test_indirect_dependencies_are_core():
    core = _requirements(_setup_cfg()["options"]["install_requires"])
    for path in _python_files():
        with open(path) as f:
            source = f.read()
        for usage, distribution in INDIRECT.items():
            if usage in source:
                assert distribution in core, (
                    f"{path} uses {usage}: add {distribution} to install_requires"
                )


def test_keras_pin_covers_the_keras_api_used():
    line = _requirements(_setup_cfg()["options"]["install_requires"])["keras"]
    minimum = tuple(int(v) for v in re.search(r">=\s*([0-9.]+)", line).group(1).split(".")[:2])
    sources = {}
    for path in _python_files():
        with open(path) as f:
            sources[path] = f.read()
    for api, since in KERAS_API_SINCE.items():
        users = [p for p, s in sources.items() if re.search(re.escape(api) + r"\b", s)]
        if users:
            assert minimum >= since, f"{api} needs keras>={since}, setup.cfg says {line!r}"


def test_optional_modules_are_not_needed_by_import_tfcell():
    # keras_tuner is an extra: `import tfcell` must work without it.
    for module in OPTIONAL:
        for path, line, in_function in _third_party_imports().get(module, []):
            assert in_function, f"{path}:{line}"


def test_license_matches_setup_cfg():
    assert _setup_cfg()["metadata"]["license"] == "Apache-2.0"
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Copyright 2026 The tfcell authors" in text


def test_citation_cff_cites_tfcell_and_the_five_papers():
    with open(os.path.join(ROOT, "CITATION.cff")) as f:
        citation = yaml.safe_load(f)
    assert citation["cff-version"] == "1.2.0"
    assert citation["title"].startswith("tfcell")
    assert citation["license"] == _setup_cfg()["metadata"]["license"]
    assert citation["version"] == _setup_cfg()["metadata"]["version"]
    assert all(key in citation for key in ("message", "authors"))
    cited = set()
    for reference in citation["references"]:
        assert reference["title"] and reference["type"], reference
        cited.add((reference["authors"][0]["family-names"], int(reference["year"])))
    assert cited == PAPERS
