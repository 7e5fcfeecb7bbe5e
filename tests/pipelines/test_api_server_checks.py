"""The compiled YAML passes what the Kubeflow Pipelines API server checks on upload and on run
creation, checked here with the protobuf classes kfp ships instead of a cluster.

Mirrored from kubeflow/pipelines, backend/src/apiserver/template/ at commit
04407fbe9397def09fd1e12df34190ba95f5d8a2 (the server KFP 2.x deploys):

- on upload, `NewV2SpecTemplate` (v2_template.go): each YAML document is decoded; one that
  `isPipelineSpec` (template.go: parses as a PipelineSpec, has a pipeline name and a root) is the
  pipeline spec, and a second one is refused ("multiple pipeline specs provided"); it is parsed
  with `protojson.Unmarshal`, which refuses unknown fields; its `schemaVersion` must be "2.1.0"
  ("KFP only supports schema version 2.1.0"); the name must not be empty and must match
  `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`; the root must be there. A
  document that `IsPlatformSpecWithKubernetesConfig` is the platform spec (at most one,
  "multiple platform specs provided"), parsed the same strict way. No pipeline spec at all: "no
  pipeline spec is provided".
- on run creation, `validatePipelineJobInputs` (v2_template.go): every root input parameter
  neither given, optional nor defaulted is refused; a given value must have the structpb kind of
  the parameter's type (NUMBER_DOUBLE/NUMBER_INTEGER: number, STRING: string, BOOLEAN: bool,
  LIST: list, STRUCT: struct; unspecified and TASK_FINAL_STATUS refused); a parameter the root
  does not declare is refused ("parameter(s) provided are not required by pipeline").

Two places are stricter here than the server: the name pattern is matched whole (the server's
`regexp.MatchString` is unanchored, so it only rejects a name without any [a-z0-9]; its error
message states the whole-name rule), and a document that is neither spec fails here (the server
skips it silently, so whatever it held would be lost).
"""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from cvat_kfp.pipelines import parameters, registry

SCHEMA_VERSION = "2.1.0"  # SCHEMA_VERSION_2_1_0 in the API server
PIPELINE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ParameterType = pipeline_spec_pb2.ParameterType

# validatePipelineJobInputs: which structpb kind each parameter type accepts.
VALUE_KINDS = {
    ParameterType.NUMBER_DOUBLE: "number_value",
    ParameterType.NUMBER_INTEGER: "number_value",
    ParameterType.STRING: "string_value",
    ParameterType.BOOLEAN: "bool_value",
    ParameterType.LIST: "list_value",
    ParameterType.STRUCT: "struct_value",
}


class RefusedByApiServer(ValueError):
    """What the API server would answer with InvalidInputError."""


def _strict_parse(document: dict, message):
    """protojson.Unmarshal's defaults: an unknown field or a wrongly typed value is an error."""
    return json_format.ParseDict(document, message, ignore_unknown_fields=False)


def _is_pipeline_spec(document: dict) -> bool:
    """template.go, isPipelineSpec."""
    try:
        spec = _strict_parse(document, pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError:
        return False
    return spec.pipeline_info.name != "" and spec.HasField("root")


def _is_platform_spec_with_kubernetes(document: dict) -> bool:
    """v2_template.go, IsPlatformSpecWithKubernetesConfig."""
    try:
        platform = _strict_parse(document, pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError:
        return False
    return "kubernetes" in platform.platforms


def load_as_the_api_server_does(text: str):
    """(PipelineSpec, PlatformSpec or None) from a compiled YAML, or RefusedByApiServer."""
    pipeline_spec = platform_spec = None
    for document in yaml.safe_load_all(text):
        if document is None:  # `if value == nil { continue }`
            continue
        if _is_pipeline_spec(document):
            if pipeline_spec is not None:
                raise RefusedByApiServer("multiple pipeline specs provided")
            spec = _strict_parse(document, pipeline_spec_pb2.PipelineSpec())
            if spec.schema_version != SCHEMA_VERSION:
                raise RefusedByApiServer(
                    f"KFP only supports schema version {SCHEMA_VERSION}, but the pipeline spec "
                    f"has version {spec.schema_version}"
                )
            if not PIPELINE_NAME.fullmatch(spec.pipeline_info.name):
                raise RefusedByApiServer(
                    f"invalid v2 pipeline spec: name {spec.pipeline_info.name!r} should consist "
                    "of lower case alphanumeric characters, '-' or '.', and must start and end "
                    "with an alphanumeric character"
                )
            pipeline_spec = spec
        elif _is_platform_spec_with_kubernetes(document):
            if platform_spec is not None:
                raise RefusedByApiServer("multiple platform specs provided")
            platform_spec = _strict_parse(document, pipeline_spec_pb2.PlatformSpec())
        else:
            try:  # say why, as the strict parse does
                _strict_parse(document, pipeline_spec_pb2.PipelineSpec())
            except json_format.ParseError as error:
                raise RefusedByApiServer(f"a document that is neither spec: {error}") from None
            raise RefusedByApiServer(f"a document that is neither spec: {list(document)}")
    if pipeline_spec is None:
        raise RefusedByApiServer("no pipeline spec is provided")
    return pipeline_spec, platform_spec


def validate_run_inputs(spec, parameter_values: dict) -> None:
    """validatePipelineJobInputs, for the values a client sends (JSON, hence structpb Values)."""
    declared = spec.root.input_definitions.parameters
    values = {
        name: json_format.ParseDict(value, struct_pb2.Value())
        for name, value in parameter_values.items()
    }
    for name, definition in declared.items():
        if name not in values:
            if not definition.is_optional and not definition.HasField("default_value"):
                raise RefusedByApiServer(
                    f"parameter {name} is not optional, yet has neither default value nor user "
                    "provided value"
                )
            continue
        wanted = VALUE_KINDS.get(definition.parameter_type)
        if wanted is None:
            type_name = ParameterType.ParameterTypeEnum.Name(definition.parameter_type)
            raise RefusedByApiServer(f"input parameter {name} has type {type_name}")
        if values[name].WhichOneof("kind") != wanted:
            raise RefusedByApiServer(
                f"input parameter {name} requires {wanted}, got {values[name].WhichOneof('kind')}"
            )
    extra = sorted(set(values) - set(declared))
    if extra:
        raise RefusedByApiServer(
            f"parameter(s) provided are not required by pipeline: {', '.join(extra)}"
        )


def _compiled(name: str) -> str:
    return (registry.COMPILED_DIR / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_upload_accepts_the_compiled_yaml(name):
    spec, platform = load_as_the_api_server_does(_compiled(name))
    assert spec.pipeline_info.name == name.replace("_", "-")
    if platform is not None:
        assert set(platform.platforms) == {"kubernetes"}


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_a_run_with_only_the_required_parameters_is_accepted(name):
    """The Kubeflow UI's Create run with every field left as it is, the required ones filled."""
    spec, _ = load_as_the_api_server_does(_compiled(name))
    required = {
        p.name: "12" if p.type == "String" else 12
        for p in parameters.pipeline_parameters(name).values()
        if p.default is None
    }
    if name in ("dataset_preparation", "tfod_training", "maskrcnn_training"):
        assert required == {}  # these runs start with every field at its default
    validate_run_inputs(spec, required)
    if required:
        with pytest.raises(RefusedByApiServer, match="is not optional"):
            validate_run_inputs(spec, {})


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_every_parameter_as_the_cli_sends_it_is_accepted(name):
    """Each parameter given explicitly at its default, through the CLI's own type conversion
    (`cvat-kfp submit --param NAME=VALUE` converts the text, then the client sends JSON)."""
    spec, _ = load_as_the_api_server_does(_compiled(name))
    declared = parameters.pipeline_parameters(name)
    as_text = {
        p.name: p.default if isinstance(p.default, str) else json.dumps(p.default)
        for p in declared.values()
    }
    checked = parameters.parse_assignments(name, [f"{k}={v}" for k, v in as_text.items()])
    assert set(checked) == set(spec.root.input_definitions.parameters)
    validate_run_inputs(spec, checked)


def test_the_readme_submit_example_is_accepted():
    spec, _ = load_as_the_api_server_does(_compiled("tfod_training"))
    checked = parameters.parse_assignments(
        "tfod_training",
        [
            "source=gs://my-bucket/cvat/task_12_coco.zip",
            "preset=frcnn-res50-coco",
            "gpu_count=1",
            "checkpoint_root=gs://my-bucket/checkpoints",
            "hyperparameters=num_steps: 5000\nbatch_size: 8",
            'node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}',
            "stratify=false",
            "score_threshold=0.3",
        ],
    )
    validate_run_inputs(spec, checked)


# The mirror itself refuses what the server refuses (so that the tests above can fail).


def _documents(name: str) -> list[dict]:
    return list(yaml.safe_load_all(_compiled(name)))


def _dump(documents: list[dict]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda d: d[0].update(schemaVersion="2.0.0"), "only supports schema version 2.1.0"),
        (lambda d: d[0]["pipelineInfo"].update(name="Tfod_Training"), "lower case alphanumeric"),
        (lambda d: d.append(copy.deepcopy(d[0])), "multiple pipeline specs"),
        (lambda d: d.append(copy.deepcopy(d[1])), "multiple platform specs"),
        (lambda d: d.pop(0), "no pipeline spec"),
        # an unknown field makes the strict parse fail, so the document is no pipeline spec
        (lambda d: d[0].update(pipelineNotes="x"), "neither spec.*pipelineNotes"),
        (
            lambda d: d[1]["platforms"]["kubernetes"]["deploymentSpec"].update(unknownField=1),
            "neither spec",
        ),
    ],
    ids=["schema", "name", "two-specs", "two-platforms", "no-spec", "unknown-field",
         "unknown-platform-field"],
)  # fmt: skip
def test_the_upload_mirror_refuses_what_the_server_refuses(change, refusal):
    documents = _documents("tfod_training")
    change(documents)
    with pytest.raises(RefusedByApiServer, match=refusal):
        load_as_the_api_server_does(_dump(documents))


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"gpu_count": "1"}, "gpu_count requires number_value"),
        ({"stratify": "false"}, "stratify requires bool_value"),
        ({"node_selector": '{"pool": "gpu"}'}, "node_selector requires struct_value"),
        ({"source": 3}, "source requires string_value"),
        ({"include_masks": True}, "not required by pipeline: include_masks"),
    ],
)
def test_the_run_mirror_refuses_what_the_server_refuses(values, refusal):
    spec, _ = load_as_the_api_server_does(_compiled("tfod_training"))
    with pytest.raises(RefusedByApiServer, match=refusal):
        validate_run_inputs(spec, values)


def test_the_run_mirror_refuses_a_missing_required_parameter():
    spec, _ = load_as_the_api_server_does(_compiled("tfod_training"))
    source = spec.root.input_definitions.parameters["source"]
    source.ClearField("default_value")
    source.is_optional = False
    with pytest.raises(RefusedByApiServer, match="parameter source is not optional"):
        validate_run_inputs(spec, {})
    validate_run_inputs(spec, {"source": "gs://bucket/export.zip"})


def test_compiled_files_are_the_ones_checked():
    assert {p.stem for p in Path(registry.COMPILED_DIR).glob("*.yaml")} == set(registry.PIPELINES)
