"""Our model as a CVAT native function (CVAT Enterprise/Cloud), registered once and served by an
agent: what deploy/agent/ runs, through cvat-cli's own `function create-native` and
`function run-agent`.

    python -m cvat_kfp.components.preannotate.cvat_agent --server-host URL \
        register NAME -p model=str:URI [-p score_threshold=float:0.5 ...]
    python -m cvat_kfp.components.preannotate.cvat_agent --server-host URL \
        run-agent NAME -p model=str:URI [...] [--burst]

`register` finds the native function called NAME on the server, or creates it with cvat-cli's
`function create-native`, and prints its id: running it again changes nothing. A function of
that name whose labels differ from the model's is refused (delete it in CVAT, or pick another
name). `run-agent` looks NAME up (register it first) and runs cvat-cli's agent for it; a new
model version with the same labels needs no new registration.

The server options are cvat-cli's (--server-host, --organization, --insecure, ...); the token is
cvat-cli's CVAT_ACCESS_TOKEN environment variable (a personal access token).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from cvat_cli._internal.agent import FUNCTION_PROVIDER_NATIVE, run_agent
from cvat_cli._internal.agent_driver_detection import AgentDetectionFunctionDriver
from cvat_cli._internal.commands_functions import FunctionCreateNative
from cvat_cli._internal.common import (
    CriticalError,
    FunctionLoader,
    build_client,
    configure_common_arguments,
    configure_logger,
)
from cvat_cli._internal.parsers import BuildDictAction, parse_function_parameter
from cvat_sdk import Client
from cvat_sdk.core.exceptions import AuthStoreError
from cvat_sdk.exceptions import ApiException
from urllib3.exceptions import HTTPError

FUNCTION_MODULE = "cvat_kfp.components.preannotate.cvat_function"
PAGE_SIZE = 100

logger = logging.getLogger("cvat_kfp.cvat_agent")


class _Loaded:
    """A FunctionLoader for a function loaded already (the model is loaded once per command)."""

    def __init__(self, function):
        self.function = function

    def load(self):
        return self.function


def native_functions_named(client: Client, name: str) -> list[dict]:
    """The server's native functions called `name` (every page of GET /api/functions)."""
    found, page = [], 1
    while True:
        _, response = client.api_client.call_api(
            "/api/functions",
            "GET",
            query_params=[("page", page), ("page_size", PAGE_SIZE)],
            _parse_response=False,
        )
        listing = json.loads(response.data)
        found += [
            f
            for f in listing["results"]
            if f.get("name") == name and f.get("provider") == FUNCTION_PROVIDER_NATIVE
        ]
        if not listing.get("next"):
            return found
        page += 1


def find_function(client: Client, name: str) -> dict | None:
    """The one native function called `name`, or None; CriticalError when several are."""
    found = native_functions_named(client, name)
    if len(found) > 1:
        ids = ", ".join(f"#{f['id']}" for f in found)
        raise CriticalError(
            f"{len(found)} native functions are called {name!r} ({ids}): delete all but one in "
            "CVAT (Models page), or register under another name"
        )
    return found[0] if found else None


def comparable_labels(labels_v2: list[dict]) -> list[dict]:
    return sorted(
        (
            {
                "name": label["name"],
                "type": label.get("type", "any"),
                "attributes": label.get("attributes", []),
            }
            for label in labels_v2
        ),
        key=lambda label: label["name"],
    )


def register(
    client: Client,
    name: str,
    parameters: dict,
    visibility: str = "private",
    function_module: str = FUNCTION_MODULE,
) -> int:
    """The id of the native function `name`, created with cvat-cli's create-native if absent."""
    function = FunctionLoader(function_module, None, parameters).load()
    wanted = AgentDetectionFunctionDriver.get_remote_function_fields(function.spec)["labels_v2"]
    existing = find_function(client, name)
    if existing is not None:
        if comparable_labels(existing.get("labels_v2", [])) != comparable_labels(wanted):
            have, want = (
                ", ".join(f"{lb['name']} ({lb['type']})" for lb in comparable_labels(labels))
                for labels in (existing["labels_v2"], wanted)
            )
            raise CriticalError(
                f"native function #{existing['id']} {name!r} is registered with the labels "
                f"{have}, the model has {want}: delete the function in CVAT (or `cvat-cli "
                f"function delete {existing['id']}`) and register again, or use another name"
            )
        logger.info("native function %r is registered already: #%d", name, existing["id"])
        print(existing["id"])
        return int(existing["id"])
    FunctionCreateNative().execute(
        client, name=name, visibility=visibility, function_loader=_Loaded(function)
    )
    created = find_function(client, name)
    if created is None:
        raise CriticalError(f"created the function {name!r}, but the server does not list it")
    return int(created["id"])


def serve(
    client: Client,
    name: str,
    parameters: dict,
    burst: bool = False,
    function_module: str = FUNCTION_MODULE,
) -> None:
    """cvat-cli's agent for the native function `name`."""
    existing = find_function(client, name)
    if existing is None:
        raise CriticalError(
            f"no native function called {name!r} on the server: register it first "
            "(the registration Job of deploy/agent/, or this module's `register` command)"
        )
    loader = FunctionLoader(function_module, None, parameters)
    run_agent(client, loader, existing["id"], burst=burst)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    configure_common_arguments(root)
    commands = root.add_subparsers(dest="command", required=True)
    for command, help_text in (
        ("register", "find or create the native function NAME; print its id"),
        ("run-agent", "process the requests of the native function NAME"),
    ):
        sub = commands.add_parser(command, help=help_text)
        sub.add_argument("name", help="the function's name in CVAT")
        sub.add_argument(
            "--function-parameter",
            "-p",
            metavar="NAME=TYPE:VALUE",
            type=parse_function_parameter,
            action=BuildDictAction,
            dest="function_parameters",
            help="a parameter of cvat_function.create, e.g. model=str:gs://bucket/exported",
        )
        sub.add_argument(
            "--function-module",
            default=FUNCTION_MODULE,
            help="another cvat-sdk function module to serve (default: our model's)",
        )
        if command == "register":
            sub.add_argument("--visibility", choices=("private", "public"), default="private")
        else:
            sub.add_argument(
                "--burst", action="store_true", help="process the pending requests, then exit"
            )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logger(logger, args)
    command, name = args.command, args.name
    parameters = args.function_parameters or {}
    del args._needs_client
    module = args.function_module
    options = {key: getattr(args, key, None) for key in ("visibility", "burst")}
    for key in ("command", "name", "function_parameters", "function_module", "visibility", "burst"):
        if hasattr(args, key):
            delattr(args, key)
    if module == FUNCTION_MODULE and "model" not in parameters:
        print("error: give the model: -p model=str:URI", file=sys.stderr)
        return 2
    try:
        with build_client(args, logger=logger) as client:
            if command == "register":
                register(client, name, parameters, options["visibility"], module)
            else:
                serve(client, name, parameters, bool(options["burst"]), module)
    except (CriticalError, ApiException, HTTPError, AuthStoreError, ValueError) as error:
        # ValueError: a bad -p parameter (cvat_function.ModelSourceError among them)
        logger.critical(error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
