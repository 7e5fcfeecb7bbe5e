"""components/<stage>/README.md are generated from the faces (make docs) and must not go stale."""

import importlib.util
import re

import pytest
from kfp import compiler

from tests.conftest import REPO_ROOT


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "component_readmes", REPO_ROOT / "scripts" / "component_readmes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


def test_every_component_readme_is_fresh():
    assert generator.stale_readmes() == [], "run `make docs` and commit the READMEs"


def test_every_stage_with_a_face_has_a_readme():
    stages = generator.component_stages()
    assert "split_dataset" in stages and "preannotate" in stages
    for stage in stages:
        assert generator.readme_path(stage).is_file(), stage


@pytest.mark.parametrize("stage", generator.component_stages())
def test_readme_documents_every_argument_and_its_example_compiles(stage, tmp_path):
    doc = generator.load_component_doc(stage)
    text = generator.readme_path(stage).read_text(encoding="utf-8")
    for port in doc.inputs + doc.outputs + doc.parameters:
        assert f"| `{port.name}` |" in text, port.name
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace = {}
    exec(compile(example, f"components/{stage}/README.md", "exec"), namespace)
    compiler.Compiler().compile(namespace[f"{stage}_example"], str(tmp_path / "example.yaml"))
    assert (tmp_path / "example.yaml").stat().st_size > 0


def test_custom_content_survives_regeneration_and_a_changed_docstring_makes_it_stale(
    monkeypatch,
):
    doc = generator.load_component_doc("split_dataset")
    custom = "\n## Notes\n\nHand-written, kept.\n"
    rendered = generator.render(doc, custom)
    assert rendered.endswith("<!-- custom-content -->\n## Notes\n\nHand-written, kept.\n")

    changed = generator.ComponentDoc(**{**vars(doc), "summary": "Something else."})
    monkeypatch.setattr(generator, "load_component_doc", lambda stage: changed)
    assert "split_dataset" in generator.stale_readmes()


def test_an_argument_without_a_description_is_refused(monkeypatch):
    from kfp import dsl

    @dsl.component(base_image="python:3.11")
    def undocumented(seed: int = 0):
        """Does something.

        Args:
            other: Not the argument.
        """

    module = type("module", (), {"undocumented": undocumented})
    monkeypatch.setattr(generator.importlib, "import_module", lambda name: module)
    with pytest.raises(SystemExit, match="argument 'seed' has no description"):
        generator.load_component_doc("anything")
