"""Every registered component (schedule, model, optimizer, dataset) is registered the same way,
and properties hold for each, whichever they are: names and colours unique, the specs read from
the source equal the imported builders', a YAML per component that composes into exactly its
builder's options, and the command line knows them all without importing torch.

No list of components is restated here: adding one (docs/adding-a-*.md) keeps this file green,
which tests/test_adding_a_*.py check by running it after following a guide."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from experiments import schema, specs
from experiments.config import CONF_DIR, compose_config
from experiments.settings import COMPONENTS, RunSettings
from tests.conftest import REPO_ROOT

KINDS = list(specs.KINDS)
COMPONENTS_BY_KIND = [(section, name) for section in KINDS for name in specs.names(section)]


def _comparable(spec: specs.Spec) -> tuple:
    options = tuple(
        (o.name, schema.field_type(o.annotation), o.default, o.required) for o in spec.options
    )
    return (spec.section, spec.name, spec.builder, options, spec.takes_any)


@pytest.mark.parametrize("section", KINDS)
def test_specs_read_from_the_source_equal_the_imported_builders(section: str) -> None:
    kind = specs.KINDS[section]
    table = getattr(importlib.import_module(kind.module), kind.table)
    imported = {s.name: s for s in (specs.imported_spec(kind, builder) for builder in table)}
    static = specs.specs(section)
    assert list(static) == list(imported)  # names and the table's order
    for name, spec in static.items():
        assert _comparable(spec) == _comparable(imported[name])
        if spec.attributes:  # a class builder's metadata, as results read it
            assert spec.attributes == imported[name].attributes
        assert spec.returns == imported[name].returns


def test_every_kind_is_read_from_the_source_without_torch() -> None:
    code = (
        "import sys\nfrom experiments import specs, validation\n"
        "from experiments.config import compose_config\n"
        "validation.check_config(compose_config(['experiment=quick/digits']))\n"
        "for section in specs.KINDS: assert specs.names(section)\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("section", KINDS)
def test_names_are_unique_and_each_has_its_yaml(section: str) -> None:
    names = specs.names(section)
    assert len(set(names)) == len(names)
    yaml_names = {path.stem for path in (CONF_DIR / section).glob("*.yaml")}
    assert set(names) == yaml_names, "a YAML per registered component, and no other"


def test_schedules_show_unique_display_names_and_colours() -> None:
    schedules = specs.specs("scheduler").values()
    for attribute in ("display_name", "colour"):
        values = [spec.attributes[attribute] for spec in schedules]
        assert len(set(values)) == len(values), attribute
    assert all(re.fullmatch(r"#[0-9a-f]{6}", spec.attributes["colour"]) for spec in schedules)


@pytest.mark.parametrize(("section", "name"), COMPONENTS_BY_KIND)
def test_each_yaml_composes_into_its_builders_options(section: str, name: str) -> None:
    cfg = compose_config([f"{section}={name}"])
    spec = specs.spec(section, name)
    assert spec is not None and cfg[section].name == name
    own = set(specs.KINDS[section].common)
    assert set(cfg[section]) == own | set(spec.option_names)
    for option in spec.options:  # defaults are the builder's unless the YAML sets a value
        if not option.required:
            assert option.name in cfg[section]


@pytest.mark.parametrize(("section", "name"), COMPONENTS_BY_KIND)
def test_each_component_becomes_typed_settings(section: str, name: str) -> None:
    overrides = [f"{section}={name}"]
    if section == "data" and specs.spec("data", name).returns != "ArraySplits":
        overrides.append("trainer.loader=classic")  # image folders need loader workers
    settings = RunSettings.from_config(compose_config(overrides))
    component = getattr(settings, section)
    assert isinstance(component, COMPONENTS[section]) and component.name == name
    assert set(component.options) == set(specs.spec(section, name).option_names)


@pytest.mark.parametrize("section", KINDS)
def test_help_lists_every_registered_component(section: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"{section}: "))
    assert set(line.partition(": ")[2].split(", ")) == set(specs.names(section))
