"""The webhook's rules file (checked at load, errors that say what to fix), `cvat-kfp webhook
serve` refusing to start without what it needs, and `cvat-kfp webhook register` through
cvat-sdk against the CVAT stand-in."""

import pytest

from cvat_kfp.pipelines.cli import main
from cvat_kfp.pipelines.webhook.rules import RulesError, load_rules, parse_rules
from tests.components.export_annotations.cvat_mock_server import CvatMockServer


def _rules(tmp_path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_a_rules_file_becomes_checked_pipeline_arguments(tmp_path):
    rules = load_rules(_rules(tmp_path, """
experiment: shapes
reconcile_interval_s: 60
rules:
  - project: 7
    pipeline: tfod_training
    preset: frcnn-res50-coco
    hyperparameters: {num_steps: 100, initial_learning_rate: 0.01}
    checkpoint_root: gs://b/ckpt
    preannotate: next-unannotated
    parameters: {gpu_count: "2", train_fraction: 0.7}
  - task: 12
    when: acceptance
    pipeline: maskrcnn_training
    preannotate: "15"
"""))  # fmt: skip
    project_rule, task_rule = rules.rules
    assert project_rule.arguments == {
        "gpu_count": 2,  # converted to the parameter's type
        "train_fraction": 0.7,
        "preset": "frcnn-res50-coco",
        "checkpoint_root": "gs://b/ckpt",
        "hyperparameters": "num_steps: 100\ninitial_learning_rate: 0.01",
    }
    assert (project_rule.scope, project_rule.when, project_rule.experiment) == (
        "task", "completed", "shapes",
    )  # fmt: skip
    assert (task_rule.when, task_rule.preannotate, task_rule.pipeline) == (
        "acceptance", 15, "maskrcnn_training",
    )  # fmt: skip
    assert rules.reconcile_interval_s == 60
    assert rules.for_task(12, 7) is task_rule  # a task's own rule wins
    assert rules.for_task(13, 7) is project_rule
    assert rules.for_task(13, 8) is None and rules.for_task(20, None) is None
    assert rules.watched_projects == [7] and rules.watched_tasks == [12]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{project: 7, pipeline: tfod_training, presett: x}",
         "unknown key(s) 'presett'; the valid keys are: project, task, scope, when, pipeline"),
        ("{project: 7, pipeline: tfod_training, parameters: {gpu_cnt: 1}}",
         "tfod_training has no parameter(s) 'gpu_cnt'; its parameters are: source,"),
        ("{project: 7, pipeline: tfod_training, parameters: {gpu_count: many}}",
         "parameter 'gpu_count' wants an integer, got 'many'"),
        ("{project: 7, pipeline: dataset_preparation}",
         "`pipeline` must be one of tfod_training, maskrcnn_training"),
        ("{pipeline: tfod_training}", "give exactly one of `project: ID` or `task: ID`"),
        ("{project: 7, task: 3, pipeline: tfod_training}", "exactly one of"),
        ("{task: 3, scope: project, pipeline: tfod_training}", "`scope: project` needs"),
        ("{project: 7, when: done, pipeline: tfod_training}",
         "`when` must be one of completed, acceptance"),
        ("{task: 3, pipeline: tfod_training, preannotate: next-unannotated}",
         "needs a `project:` rule"),
        ("{project: 7, pipeline: tfod_training, preannotate: later}",
         "`preannotate` must be 'next-unannotated'"),
        ("{project: 7, pipeline: tfod_training, parameters: {task_ids: '1'}}",
         "task_ids are set by the service"),
        ("{project: -1, pipeline: tfod_training}", "`project` must be a CVAT project id"),
        ("{project: 7, pipeline: tfod_training, preset: maskrcnn}",
         "preset 'maskrcnn' is a Mask R-CNN, not for tfod_training"),
        ("{project: 7, pipeline: tfod_training, preset: yolo}", "unknown model preset 'yolo'"),
        ("{project: 7, pipeline: maskrcnn_training, hyperparameters: {num_stepz: 5}}",
         "unknown hyperparameter 'num_stepz' (did you mean 'num_steps'?)"),
        ("{project: 7, pipeline: tfod_training, hyperparameters: {batch_size: 0}}",
         "batch_size must be"),
    ],
)  # fmt: skip
def test_a_bad_rule_names_the_rule_and_what_to_fix(tmp_path, rule, message):
    path = _rules(tmp_path, f"rules:\n  - {{project: 8, pipeline: tfod_training}}\n  - {rule}\n")
    with pytest.raises(RulesError) as error:
        load_rules(path)
    assert f"{path}, rule 2: " in str(error.value)
    assert message in str(error.value)


def test_bad_rules_files(tmp_path):
    with pytest.raises(RulesError, match="unknown key.*'rule'.*valid keys are: experiment, "
                                         "reconcile_interval_s, rules"):  # fmt: skip
        parse_rules({"rule": []}, "r.yaml")
    with pytest.raises(RulesError, match="`rules` must be a non-empty list"):
        parse_rules({"rules": []}, "r.yaml")
    with pytest.raises(RulesError, match="rules 1 and 2 are both for project 7"):
        parse_rules({"rules": [{"project": 7, "pipeline": "tfod_training"}] * 2}, "r.yaml")
    with pytest.raises(RulesError, match="is not valid YAML"):
        load_rules(_rules(tmp_path, "rules: [\n"))
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")


def test_serve_refuses_to_start_on_a_bad_rules_file_or_without_a_secret(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CVAT_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", "t")
    bad = _rules(tmp_path, "rules:\n  - {project: 7, pipeline: tfod_training, gpus: 1}\n")
    args = ["webhook", "serve", "--rules", str(bad), "--cvat-url", "http://cvat.invalid",
            "--database", str(tmp_path / "db.sqlite")]  # fmt: skip
    assert main(args) == 2
    assert "rule 1: unknown key(s) 'gpus'; the valid keys are:" in capsys.readouterr().err
    assert not (tmp_path / "db.sqlite").exists()

    good = _rules(tmp_path, "rules:\n  - {project: 7, pipeline: tfod_training}\n")
    args[3] = str(good)
    monkeypatch.delenv("CVAT_WEBHOOK_SECRET")
    assert main(args) == 2
    assert "no webhook secret: set CVAT_WEBHOOK_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("CVAT_WEBHOOK_SECRET", "s")
    monkeypatch.delenv("CVAT_ACCESS_TOKEN")
    assert main(args) == 2
    assert "no CVAT credentials in the environment" in capsys.readouterr().err


def test_register_creates_the_webhook_once_then_finds_it(monkeypatch, capsys):
    with CvatMockServer() as cvat:
        cvat.add_project(7)
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", cvat.token)
        monkeypatch.setenv("CVAT_WEBHOOK_SECRET", "first-secret")
        url = "http://cvat-kfp-webhook.kubeflow.svc:8080/webhook"
        args = ["webhook", "register", "--project", "7", "--url", url, "--cvat-url", cvat.url]

        assert main(args) == 0
        out = capsys.readouterr().out
        assert f"webhook 1 created for project 7: {url} (update:job, update:task)" in out
        assert cvat.webhooks[1] == {
            "target_url": url, "type": "project", "events": ["update:job", "update:task"],
            "project_id": 7, "content_type": "application/json", "secret": "first-secret",
            "is_active": True, "enable_ssl": True,
            "description": "cvat-kfp: trains a model when the task's annotation jobs are done",
        }  # fmt: skip

        cvat.webhooks[1].update(is_active=False, events=["update:job"])  # changed by hand
        monkeypatch.setenv("CVAT_WEBHOOK_SECRET", "rotated-secret")
        assert main(args) == 0
        assert "webhook 1 updated for project 7" in capsys.readouterr().out
        assert len(cvat.webhooks) == 1
        assert cvat.webhooks[1]["secret"] == "rotated-secret"
        assert cvat.webhooks[1]["is_active"] is True
        assert cvat.webhooks[1]["events"] == ["update:job", "update:task"]
        (lookup, *_) = cvat.calls("GET", "/api/webhooks")
        assert lookup.query["project_id"] == "7" and lookup.query["target_url"] == url
        assert all("rotated-secret" not in str(r) for r in cvat.requests)


def test_register_explains_a_missing_project_and_a_bad_url(monkeypatch, capsys):
    with CvatMockServer() as cvat:
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", cvat.token)
        monkeypatch.setenv("CVAT_WEBHOOK_SECRET", "s")
        base = ["webhook", "register", "--project", "7", "--cvat-url", cvat.url, "--url"]
        assert main([*base, "http://svc/webhook"]) == 1
        assert "could not create a webhook for project 7" in capsys.readouterr().err
        assert main([*base, "svc:8080"]) == 1
        assert "give the service's address as CVAT reaches it" in capsys.readouterr().err
        monkeypatch.delenv("CVAT_WEBHOOK_SECRET")
        assert main([*base, "http://svc/webhook"]) == 1
        assert "no webhook secret: set CVAT_WEBHOOK_SECRET" in capsys.readouterr().err
