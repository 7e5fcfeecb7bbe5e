"""Agent mode (CVAT Enterprise/Cloud native functions): cvat-cli's own `function create-native` and
`function run-agent --burst`, and our idempotent registration (cvat_agent), against the CVAT
stand-in's functions API; the function is our ModelFunction over known detections
(fake_cvat_function.py). test_cvat_function_real_model.py runs a real model the same way."""

import pytest
from cvat_cli.__main__ import main as cvat_cli

from cvat_kfp.components.preannotate import cvat_agent
from tests.components.export_annotations.cvat_mock_server import CvatMockServer
from tests.components.preannotate.fake_cvat_function import NAMES
from tests.components.preannotate.test_preannotate import png

FAKE = "tests.components.preannotate.fake_cvat_function"


@pytest.fixture()
def server(cli_env):
    with CvatMockServer(chunk_size=1) as server:
        server.add_task(7, labels=list(NAMES), frames=[(f"f{i}.png", png()) for i in range(2)])
        yield server


def agent(server, *args):
    return cvat_agent.main(["--server-host", server.url, *args, "--function-module", FAKE])


def test_registration_creates_the_function_once_with_the_model_labels(server, capsys):
    assert agent(server, "register", "shapes") == 0
    assert agent(server, "register", "shapes") == 0

    (function,) = server.functions.values()
    assert capsys.readouterr().out.split() == [str(function["id"])] * 2
    assert (function["name"], function["provider"], function["kind"]) == (
        "shapes",
        "native",
        "detector",
    )
    assert function["labels_v2"] == [
        {"name": name, "type": "rectangle", "attributes": []} for name in NAMES
    ]
    assert len(server.calls("POST", "/api/functions/?")) == 1


def test_a_function_of_that_name_with_other_labels_is_refused(server, caplog):
    assert agent(server, "register", "shapes", "-p", "names=str:cat") == 0

    assert agent(server, "register", "shapes") == 1

    assert "registered with the labels cat (rectangle), the model has cat (rectangle), dog" in (
        caplog.text
    )
    assert len(server.functions) == 1


def test_the_agent_annotates_a_requested_task_with_cvat_threshold(server):
    assert agent(server, "register", "shapes") == 0
    (function_id,) = server.functions
    request = server.add_function_request(function_id, 7, threshold=0.6)

    assert agent(server, "run-agent", "shapes", "--burst") == 0

    assert server.function_requests[request]["status"] == "finished"
    cat, dog = (server.label_id(7, name) for name in NAMES)
    shapes = server.shapes(7)
    assert [(s["frame"], s["label_id"], s["type"], s["source"]) for s in shapes] == [
        (0, cat, "rectangle", "auto"),
        (1, dog, "rectangle", "auto"),
    ]
    assert [s["points"] for s in shapes] == [[2, 3, 20, 15], [0, 5, 12, 25]]


def test_cvat_clis_own_commands_serve_the_function(server, capsys):
    assert (
        cvat_cli(
            ["--server-host", server.url, "function", "create-native", "shapes"]
            + ["--function-module", FAKE]
        )
        == 0
    )
    function_id = int(capsys.readouterr().out.split()[-1])
    server.add_function_request(function_id, 7, threshold=None, conv_mask_to_poly=True)

    assert (
        cvat_cli(
            ["--server-host", server.url, "function", "run-agent", str(function_id), "--burst"]
            + ["--function-module", FAKE, "-p", "score_threshold=float:0.3"]
        )
        == 0
    )

    # No CVAT threshold: the function's own (0.3) keeps the 0.4 dog too.
    assert [s["score"] for s in server.shapes(7)] == pytest.approx([0.9, 0.4, 0.7])


def test_a_mapping_to_a_label_the_task_lacks_fails_the_request_clearly(server):
    assert agent(server, "register", "shapes") == 0
    (function_id,) = server.functions
    request = server.add_function_request(function_id, 7, mapping={"cat": "cat", "dog": "wolf"})

    assert agent(server, "run-agent", "shapes", "--burst") == 0

    assert server.function_requests[request]["status"] == "failed"
    assert server.function_requests[request]["error"] == (
        "Underlying function returned incorrect result: label 'dog' is not in dataset"
    )
    assert server.shapes(7) == []


def test_running_an_unregistered_function_says_to_register_it(server, caplog):
    assert agent(server, "run-agent", "shapes", "--burst") == 1
    assert "no native function called 'shapes' on the server: register it first" in caplog.text


def test_our_module_needs_a_model(server, capsys):
    assert cvat_agent.main(["--server-host", server.url, "register", "shapes"]) == 2
    assert "give the model: -p model=str:URI" in capsys.readouterr().err
