"""A pipeline's parameters as the CLI and the Python API take them: `name=value` strings or a
mapping, checked against the pipeline's signature before anything runs or is sent to a cluster.

Errors name what to fix: an unknown pipeline or parameter lists the valid ones; a value of the
wrong type names the parameter and the type it wants.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cvat_kfp.components.common.report import markdown_cell
from cvat_kfp.pipelines import registry

TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off")
TYPE_NAMES = {
    "String": "string",
    "Integer": "integer",
    "Float": "number",
    "Boolean": "boolean (true/false)",
    "Dict": "JSON object",
    "List": "JSON list",
}


class ParameterError(ValueError):
    """A parameter the pipeline does not have, or a value it cannot take."""


@dataclass(frozen=True)
class PipelineParameter:
    name: str
    type: str  # KFP's: String, Integer, Float, Boolean, Dict, List
    default: Any
    description: str

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, self.type)


def load(pipeline_name: str):
    """The pipeline by name, or a ParameterError listing the pipelines."""
    try:
        return registry.load_pipeline(pipeline_name)
    except KeyError as error:
        raise ParameterError(error.args[0]) from None


def pipeline_parameters(pipeline_name: str) -> dict[str, PipelineParameter]:
    """name → parameter, in the pipeline's signature order."""
    spec = load(pipeline_name).component_spec
    return {
        name: PipelineParameter(name, str(spec.type), spec.default, spec.description or "")
        for name, spec in (spec.inputs or {}).items()
    }


def _convert(parameter: PipelineParameter, value: Any) -> Any:
    """`value` (a string from the command line, or a Python value) as the parameter's type."""
    wanted = parameter.type
    article = "an" if parameter.type_name[0] in "aeiou" else "a"
    problem = f"parameter {parameter.name!r} wants {article} {parameter.type_name}, got {value!r}"
    if isinstance(value, str) and wanted != "String":
        text = value.strip()
        if wanted == "Boolean":
            if text.lower() in TRUE_WORDS:
                return True
            if text.lower() in FALSE_WORDS:
                return False
            raise ParameterError(problem)
        if wanted == "Integer":
            try:
                return int(text)
            except ValueError:
                raise ParameterError(problem) from None
        if wanted == "Float":
            try:
                return float(text)
            except ValueError:
                raise ParameterError(problem) from None
        if wanted in ("Dict", "List"):
            try:
                value = json.loads(text) if text else ({} if wanted == "Dict" else [])
            except json.JSONDecodeError as error:
                raise ParameterError(f"{problem}: not valid JSON ({error})") from None
    python_types = {
        "String": (str,),
        "Integer": (int,),
        "Float": (int, float),
        "Boolean": (bool,),
        "Dict": (dict,),
        "List": (list,),
    }
    expected = python_types.get(wanted)
    if expected is None:
        return value
    if isinstance(value, bool) and wanted in ("Integer", "Float"):
        raise ParameterError(problem)
    if not isinstance(value, expected):
        raise ParameterError(problem)
    return float(value) if wanted == "Float" else value


def check_arguments(pipeline_name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """`arguments` converted to the parameters' types; a ParameterError names what is wrong."""
    parameters = pipeline_parameters(pipeline_name)
    unknown = [name for name in arguments if name not in parameters]
    if unknown:
        raise ParameterError(
            f"{pipeline_name} has no parameter(s) {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(parameters)}"
        )
    checked = {name: _convert(parameters[name], value) for name, value in arguments.items()}
    if checked.get("cvat_url"):
        # Refused here, before KFP logs the run's parameters, and not only in the component.
        from cvat_kfp.components.common.cvat_client import check_cvat_url

        try:
            check_cvat_url(checked["cvat_url"])
        except ValueError as error:
            raise ParameterError(str(error)) from None
    return checked


def parse_assignments(pipeline_name: str, assignments: Iterable[str]) -> dict[str, Any]:
    """`["name=value", ...]` (the CLI's `--param`) as checked, typed arguments."""
    raw: dict[str, str] = {}
    for assignment in assignments:
        name, separator, value = assignment.partition("=")
        if not separator or not name.strip():
            raise ParameterError(f"--param {assignment!r}: write it as NAME=VALUE")
        raw[name.strip()] = value
    return check_arguments(pipeline_name, raw)


def describe(pipeline_name: str) -> str:
    """The parameter table of a pipeline, as Markdown (the README's and `cvat-kfp describe`)."""
    rows = ["| parameter | type | default | meaning |", "|---|---|---|---|"]
    for parameter in pipeline_parameters(pipeline_name).values():
        default = json.dumps(parameter.default) if parameter.default != "" else '""'
        description = markdown_cell(parameter.description)
        rows.append(f"| `{parameter.name}` | {parameter.type_name} | `{default}` | {description} |")
    return "\n".join(rows) + "\n"
