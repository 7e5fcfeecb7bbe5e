"""Pipeline parameters as the CLI and the Python API take them, and the errors a user can act on."""

import re

import pytest

from cvat_kfp.components.training.presets import presets_for
from cvat_kfp.pipelines import parameters, registry
from cvat_kfp.pipelines.cli import main


def test_values_are_converted_to_the_parameter_types():
    arguments = parameters.parse_assignments(
        "tfod_training",
        [
            "source=gs://bucket/a=b.zip",  # only the first "=" separates
            "gpu_count=0",
            "score_threshold=0.25",
            "stratify=no",
            'node_selector={"pool": "gpu"}',
            "hyperparameters=num_steps: 10\nbatch_size: 2",
            "preannotate_task_id=42",  # a string parameter stays a string
        ],
    )
    assert arguments == {
        "source": "gs://bucket/a=b.zip",
        "gpu_count": 0,
        "score_threshold": 0.25,
        "stratify": False,
        "node_selector": {"pool": "gpu"},
        "hyperparameters": "num_steps: 10\nbatch_size: 2",
        "preannotate_task_id": "42",
    }


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("gpu_count=two", "parameter 'gpu_count' wants an integer, got 'two'"),
        ("train_fraction=most", "parameter 'train_fraction' wants a number"),
        ("stratify=maybe", "parameter 'stratify' wants a boolean (true/false)"),
        ("node_selector={pool: gpu}", "parameter 'node_selector' wants a JSON object"),
        ("gpu_count", "write it as NAME=VALUE"),
    ],
)
def test_a_bad_value_names_the_parameter_and_its_type(assignment, expected):
    with pytest.raises(parameters.ParameterError, match=re.escape(expected)):
        parameters.parse_assignments("tfod_training", [assignment])


def test_python_values_are_checked_too():
    with pytest.raises(parameters.ParameterError, match="'gpu_count' wants an integer"):
        parameters.check_arguments("tfod_training", {"gpu_count": True})
    assert parameters.check_arguments("tfod_training", {"iou_threshold": 1}) == {
        "iou_threshold": 1.0
    }


def test_unknown_parameter_lists_the_valid_ones(capsys):
    assert main(["run", "maskrcnn_training", "--param", "masks=1"]) == 2
    err = capsys.readouterr().err
    assert "maskrcnn_training has no parameter(s) 'masks'" in err
    assert "preannotate_mask_format" in err and "source" in err


def test_unknown_pipeline_lists_the_pipelines(capsys):
    assert main(["run", "yolo_training"]) == 2
    err = capsys.readouterr().err
    assert "yolo_training" in err
    assert all(name in err for name in registry.PIPELINES)


def _declared(pipeline_name: str) -> dict[str, tuple]:
    """name → (type, default, description with whitespace folded), as the pipeline declares it."""
    return {
        name: (p.type, p.default, " ".join(p.description.split()))
        for name, p in parameters.pipeline_parameters(pipeline_name).items()
    }


def test_training_pipelines_declare_the_data_parameters_as_dataset_preparation_does():
    """The two explicit training signatures repeat dataset-preparation's parameters (all but
    include_masks, which each pipeline decides); they must not drift apart."""
    data = _declared("dataset_preparation")
    del data["include_masks"]
    for name in ("tfod_training", "maskrcnn_training"):
        declared = _declared(name)
        assert "include_masks" not in declared
        assert {p: declared.get(p) for p in data} == data, name


def test_the_two_training_pipelines_differ_only_where_their_models_do():
    tfod, maskrcnn = _declared("tfod_training"), _declared("maskrcnn_training")
    assert set(maskrcnn) - set(tfod) == {"preannotate_mask_format"}
    assert set(tfod) <= set(maskrcnn)
    differing = {name for name in tfod if tfod[name] != maskrcnn[name]}
    assert differing == {"preset"}
    for pipeline, trainer, default in (
        (tfod, "train_tfod", "ssd-mobilenet-v2-coco"),
        (maskrcnn, "train_maskrcnn", "maskrcnn"),
    ):
        presets = [preset.name for preset in presets_for(trainer)]
        assert pipeline["preset"][1] == default and default in presets
        assert pipeline["preset"][2].endswith(f"preset table): {', '.join(presets)}."), (
            f"the {trainer} pipeline's preset description must list its presets: {presets}"
        )


def test_describe_prints_a_markdown_table_per_pipeline(capsys):
    assert main(["describe", "tfod_training"]) == 0
    out = capsys.readouterr().out
    assert "| `gpu_count` | integer | `1` |" in out
    assert '| `init_model_uri` | string | `""` |' in out


def test_a_cvat_url_with_credentials_is_refused_before_anything_runs(capsys):
    url = "cvat_url=https://alice:s3cret-pw@cvat.example.com"
    assert main(["run", "dataset_preparation", "--param", url, "--param", "task_ids=3"]) == 2
    err = capsys.readouterr().err
    assert "https://cvat.example.com carries credentials" in err and "CVAT_ACCESS_TOKEN" in err
    assert "s3cret-pw" not in err
