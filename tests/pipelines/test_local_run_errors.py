"""A failed local run says why first: the stage's own error message, then where the full log is;
and what can be checked before anything runs (a local input that does not exist) is."""

import io

import pytest

from cvat_kfp.pipelines.cli import main
from cvat_kfp.pipelines.local_run import LocalRunError, run_locally, stage_error

# The end of a failed task's output as kfp.local 2.17 prints it: the task's lines indented by
# four spaces (the executor input JSON, then Python's traceback), then kfp.local's own lines.
EXECUTOR_INPUT = [
    "    {",
    '        "inputs": {',
    '            "parameterValues": {"source": "/data/x"}',
    "        },",
    '        "outputFile": "/runs/p/export-annotations/executor_output.json"',
    "    }",
]
TRACEBACK = [
    "    Traceback (most recent call last):",
    '      File "<frozen runpy>", line 198, in _run_module_as_main',
    '      File "/venv/kfp/dsl/executor.py", line 453, in execute',
    "        result = self.func(**func_kwargs)",
    "                 ^^^^^^^^^^^^^^^^^^^^^^^^",
    '      File "/src/components/export_annotations/sources.py", line 71, in _fetch_local',
    '        raise storage.ObjectNotFoundError(f"export source {source}: no such file")',
]
KFP_END = [
    "    ",
    "",
    "16:20:16.786 - ERROR - Task 'export-annotations' finished with status FAILURE",
    "-" * 80,
]


def test_the_stage_error_is_the_exception_its_process_ended_with():
    lines = [
        *EXECUTOR_INPUT,
        *TRACEBACK,
        "    cvat_kfp.components.common.storage.ObjectNotFoundError: export source /data/x: "
        "no such file or folder",
        *KFP_END,
    ]
    # the suite's own exceptions speak for themselves: no type name
    assert stage_error(lines) == "export source /data/x: no such file or folder"


def test_a_foreign_exception_keeps_its_type_and_every_line_of_its_message():
    lines = [
        *TRACEBACK,
        "    ValueError: hyperparameters: unknown key 'num_step'",
        "      did you mean num_steps?",
        *KFP_END,
    ]
    assert stage_error(lines) == (
        "ValueError: hyperparameters: unknown key 'num_step'\n  did you mean num_steps?"
    )


def test_of_chained_exceptions_the_last_is_the_stage_error():
    lines = [
        *TRACEBACK,
        "    KeyError: 'boxes'",
        "    ",
        "    The above exception was the direct cause of the following exception:",
        "    ",
        *TRACEBACK,
        "    cvat_kfp.components.x.BadAnnotation: annotations.json: annotation 7 has no bbox",
    ]
    assert stage_error(lines) == "annotations.json: annotation 7 has no bbox"


def test_no_traceback_no_stage_error():
    assert stage_error([*EXECUTOR_INPUT, "    Killed", *KFP_END]) is None
    assert stage_error([]) is None


def test_a_local_source_that_does_not_exist_stops_the_run_before_it_starts(tmp_path, capsys):
    missing = tmp_path / "no_such_export.zip"
    work_dir = tmp_path / "runs"

    status = main(
        ["run", "tfod_training", "--param", f"source={missing}", "--work-dir", str(work_dir)]
    )

    assert status == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"cvat-kfp run: source {missing}: no such file or folder on this machine; give a CVAT "
        "export (folder, .zip or .tar.gz) that exists here, or a gs:// or https:// URI"
    )
    assert captured.out == ""  # no stage started
    assert not work_dir.exists()


@pytest.mark.parametrize(
    "arguments",
    [
        {"source": "gs://bucket/export.zip"},  # remote: the stage checks it
        {"source": ""},  # pulls from cvat_url instead
    ],
)
def test_remote_and_empty_sources_are_left_to_the_stage(arguments):
    from cvat_kfp.pipelines import local_run

    local_run.check_local_inputs(arguments)  # no error


def test_a_missing_init_model_is_reported_before_the_run(tmp_path):
    from cvat_kfp.pipelines.parameters import ParameterError

    with pytest.raises(ParameterError, match=r"init_model_uri .*no_model: no such file or folder"):
        run_locally(
            "tfod_training",
            {"source": str(tmp_path), "init_model_uri": f"file://{tmp_path}/no_model"},
            tmp_path / "runs",
        )


@pytest.mark.slow
def test_a_failed_stage_prints_its_own_error_first_then_the_log_path(tmp_path, capsys):
    """A real run under kfp.local: export-annotations refuses a folder that is no CVAT export."""
    not_an_export = tmp_path / "not_an_export"
    not_an_export.mkdir()
    (not_an_export / "notes.txt").write_text("no annotations here")
    work_dir = tmp_path / "runs"

    status = main(
        ["run", "dataset_preparation", "--param", f"source={not_an_export}",
         "--work-dir", str(work_dir)]
    )  # fmt: skip

    assert status == 1
    captured = capsys.readouterr()
    assert "✗ export-annotations failed" in captured.out
    lines = captured.err.splitlines()
    assert lines[0] == "cvat-kfp run: dataset_preparation: stage 'export-annotations' failed:"
    assert lines[1].startswith(f"    ValueError: {not_an_export}: no known CVAT export format")
    (log_path,) = (work_dir / "logs").glob("dataset_preparation-*.log")
    assert lines[-1] == f"Full log: {log_path}"
    # neither the executor input nor the traceback: they are in the log
    assert "Traceback" not in captured.err and "executor_output.json" not in captured.err
    log = log_path.read_text()
    assert "Traceback (most recent call last)" in log and "no known CVAT export format" in log


@pytest.mark.slow
def test_the_python_api_carries_the_stage_and_its_reason(tmp_path):
    not_an_export = tmp_path / "not_an_export"
    not_an_export.mkdir()
    with pytest.raises(LocalRunError) as failure:
        run_locally(
            "dataset_preparation", {"source": str(not_an_export)}, tmp_path, console=io.StringIO()
        )
    assert failure.value.stage == "export-annotations"
    assert "no known CVAT export format" in failure.value.reason
    assert failure.value.log_path.is_file()
