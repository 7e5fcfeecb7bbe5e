"""Writes components/<stage>/README.md from each component's own signature and docstring.

    python scripts/component_readmes.py           # rewrite every stale README (make docs)
    python scripts/component_readmes.py --check   # list stale READMEs, exit 1 if any

Text after the `<!-- custom-content -->` marker in a README is kept across regenerations (the
kubeflow/pipelines-components convention); everything above it is generated.
"""

import argparse
import importlib
import inspect
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import docstring_parser
from kfp.dsl.types.type_annotations import InputAnnotation, OutputAnnotation

from cvat_kfp.components.common.report import markdown_cell

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPONENTS_DIR = REPO_ROOT / "components"
CUSTOM_CONTENT_MARKER = "<!-- custom-content -->"
_IMPORT_ROOT = "cvat_kfp.components"


@dataclass(frozen=True)
class Port:
    """One argument of a component function: an artifact input/output or a parameter."""

    name: str
    type_name: str
    description: str
    default: object = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class ComponentDoc:
    stage: str
    function_name: str
    summary: str
    description: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    parameters: tuple[Port, ...]


def component_stages() -> list[str]:
    """Every stage folder with a component.py, in name order."""
    return sorted(path.parent.name for path in COMPONENTS_DIR.glob("*/component.py"))


def load_component_doc(stage: str) -> ComponentDoc:
    module = importlib.import_module(f"{_IMPORT_ROOT}.{stage}.component")
    components = [value for value in vars(module).values() if hasattr(value, "component_spec")]
    if len(components) != 1:
        raise SystemExit(
            f"components/{stage}/component.py: expected one component, found {len(components)}"
        )
    function = components[0].python_func
    docstring = docstring_parser.parse(function.__doc__ or "")
    described = {param.arg_name: " ".join(param.description.split()) for param in docstring.params}
    inputs, outputs, parameters = [], [], []
    for name, parameter in inspect.signature(function).parameters.items():
        if name not in described:
            raise SystemExit(
                f"components/{stage}/component.py: argument {name!r} has no "
                "description in the docstring's Args"
            )
        kind, type_name = _classify(parameter.annotation)
        port = Port(name, type_name, described[name], parameter.default)
        {"input": inputs, "output": outputs, "parameter": parameters}[kind].append(port)
    return ComponentDoc(
        stage=stage,
        function_name=function.__name__,
        summary=docstring.short_description or "",
        description=docstring.long_description or "",
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        parameters=tuple(parameters),
    )


def _classify(annotation) -> tuple[str, str]:
    if typing.get_origin(annotation) is typing.Annotated:
        artifact, marker = typing.get_args(annotation)[:2]
        kind = "output" if marker is OutputAnnotation else "input"
        assert marker in (InputAnnotation, OutputAnnotation), annotation
        return kind, artifact.__name__
    return "parameter", getattr(annotation, "__name__", str(annotation))


def render(doc: ComponentDoc, custom_content: str = "") -> str:
    title = doc.stage.replace("_", "-")
    lines = [
        f"# {title}",
        "",
        f"<!-- Generated from components/{doc.stage}/component.py by `make docs`: edit the "
        "docstring and signature there, then regenerate. -->",
        "",
        doc.summary,
        "",
    ]
    if doc.description:
        lines += [doc.description, ""]
    lines += _port_table("Inputs", doc.inputs, with_default=True)
    lines += _port_table("Outputs", doc.outputs, with_default=False)
    lines += _port_table("Parameters", doc.parameters, with_default=True)
    lines += ["## Example", "", "```python", _formatted("\n".join(_example(doc))), "```", ""]
    lines += [CUSTOM_CONTENT_MARKER, ""]
    text = "\n".join(lines)
    return text + custom_content.lstrip("\n") if custom_content.strip() else text


def _port_table(heading: str, ports: tuple[Port, ...], *, with_default: bool) -> list[str]:
    if not ports:
        return []
    header = (
        ["name", "type", "default", "description"]
        if with_default
        else ["name", "type", "description"]
    )
    lines = [f"## {heading}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for port in ports:
        cells = [f"`{port.name}`", port.type_name]
        if with_default:
            cells.append("required" if port.required else f"`{port.default!r}`")
        cells.append(markdown_cell(port.description))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _example(doc: ComponentDoc) -> list[str]:
    """A pipeline that imports the component's artifact inputs and runs it: it compiles as is."""
    required_inputs = [port for port in doc.inputs if port.required]
    required_parameters = [port for port in doc.parameters if port.required]
    pipeline_args = [f"{port.name}_uri: str" for port in required_inputs]
    pipeline_args += [f"{port.name}: {port.type_name}" for port in required_parameters]
    lines = ["from kfp import dsl", ""]
    lines += [f"from {_IMPORT_ROOT}.{doc.stage}.component import {doc.function_name}", "", ""]
    lines += ["@dsl.pipeline", f"def {doc.stage}_example({', '.join(pipeline_args)}):"]
    for port in required_inputs:
        lines.append(
            f"    {port.name} = dsl.importer(artifact_uri={port.name}_uri, "
            f"artifact_class=dsl.{port.type_name}, reimport=False)"
        )
    call_args = [f"{port.name}={port.name}.output" for port in required_inputs]
    call_args += [f"{port.name}={port.name}" for port in required_parameters]
    lines.append(f"    {doc.function_name}({', '.join(call_args)})")
    return lines


def _formatted(code: str) -> str:
    """The code as `ruff format` writes it (make lint formats Markdown code blocks too)."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", "example.py", "-"],
        input=code,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    return result.stdout.rstrip("\n")


def readme_path(stage: str) -> Path:
    return COMPONENTS_DIR / stage / "README.md"


def expected_readme(stage: str) -> str:
    path = readme_path(stage)
    custom = ""
    if path.is_file():
        _, marker, custom = path.read_text(encoding="utf-8").partition(CUSTOM_CONTENT_MARKER)
        custom = custom if marker else ""
    return render(load_component_doc(stage), custom)


def stale_readmes() -> list[str]:
    """The stages whose README.md is missing or differs from what their face generates."""
    stale = []
    for stage in component_stages():
        path = readme_path(stage)
        if not path.is_file() or path.read_text(encoding="utf-8") != expected_readme(stage):
            stale.append(stage)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale READMEs")
    args = parser.parse_args(argv)
    stale = stale_readmes()
    if args.check:
        for stage in stale:
            print(f"components/{stage}/README.md is stale: run `make docs`")
        return 1 if stale else 0
    for stage in stale:
        readme_path(stage).write_text(expected_readme(stage), encoding="utf-8")
        print(f"wrote components/{stage}/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
