"""Where training keeps durable checkpoints: one location per run, shared by its retries."""

import pytest

from cvat_kfp.pipelines.training import checkpoint_location

locate = checkpoint_location.python_func


def test_an_explicit_checkpoint_uri_wins():
    assert locate("gs://b/resume-me", "gs://b/root", "run-1") == "gs://b/resume-me"


def test_a_root_gives_each_run_its_own_folder():
    assert locate("", "gs://b/checkpoints/", "1f2e") == "gs://b/checkpoints/1f2e"
    assert locate("", "/mnt/ckpt", "run-2") == "/mnt/ckpt/run-2"


def test_neither_means_no_durable_checkpoints(capsys):
    assert locate("", "", "run-1") == ""
    assert "starts from step 0" in capsys.readouterr().out


def test_an_unsubstituted_run_id_is_refused_rather_than_shared_across_runs():
    with pytest.raises(ValueError, match="set checkpoint_uri"):
        locate("", "gs://b/root", "{{$.pipeline_job_uuid}}")
