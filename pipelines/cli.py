"""The `cvat-kfp` command line: run locally, compile, submit, upload, demo, describe.

Every command has a Python twin (see the README): local_run.run_locally, registry.compile_pipeline,
cluster.submit, cluster.upload, demo.run_demo, parameters.describe.
"""

from __future__ import annotations

import argparse
import os
import sys

from cvat_kfp.pipelines import registry

PARAM_HELP = (
    "a pipeline parameter, NAME=VALUE (repeatable); `cvat-kfp describe PIPELINE` lists them"
)


def _set_images(args) -> None:
    """Before any component module loads: they read the image names when imported."""
    if getattr(args, "image", None):
        os.environ["CVAT_KFP_IMAGE"] = args.image
    if getattr(args, "gpu_image", None):
        os.environ["CVAT_KFP_GPU_IMAGE"] = args.gpu_image


def _compile(args) -> int:
    names = args.pipelines or list(registry.PIPELINES)
    unknown = [n for n in names if n not in registry.PIPELINES]
    if unknown:
        print(
            f"cvat-kfp compile: unknown pipeline(s) {', '.join(unknown)}; "
            f"choose from {', '.join(registry.PIPELINES)}",
            file=sys.stderr,
        )
        return 2
    for name in names:
        print(registry.compile_pipeline(name, args.output_dir))
    return 0


def _describe(args) -> int:
    from cvat_kfp.pipelines import parameters

    for name in args.pipelines or list(registry.PIPELINES):
        pipeline = parameters.load(name)
        print(f"## {name}\n\n{pipeline.description or ''}\n\n{parameters.describe(name)}")
    return 0


def _run(args) -> int:
    from cvat_kfp.pipelines import parameters
    from cvat_kfp.pipelines.local_run import run_locally

    arguments = parameters.parse_assignments(args.pipeline, args.param)
    run_locally(args.pipeline, arguments, args.work_dir, verbose=args.verbose)
    return 0


def _submit(args) -> int:
    from cvat_kfp.pipelines import cluster, parameters

    arguments = parameters.parse_assignments(args.pipeline, args.param)
    submitted = cluster.submit(
        args.pipeline,
        arguments,
        host=args.host,
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        enable_caching=args.caching,
    )
    print(f"run {submitted.run_id} started (experiment {submitted.experiment_id}): {submitted.url}")
    return 0


def _upload(args) -> int:
    from cvat_kfp.pipelines import cluster

    uploaded = cluster.upload(
        args.pipeline, host=args.host, namespace=args.namespace, version=args.version
    )
    if uploaded.new_pipeline:
        print(f"pipeline {args.pipeline} uploaded as {uploaded.pipeline_id}: {uploaded.url}")
    else:
        print(
            f"new version {uploaded.pipeline_version_id} of pipeline {uploaded.pipeline_id}: "
            f"{uploaded.url}"
        )
    return 0


def _demo(args) -> int:
    from cvat_kfp.pipelines.demo import run_demo

    run_demo(
        args.work_dir,
        num_images=args.images,
        seed=args.seed,
        maskrcnn=args.maskrcnn,
        verbose=args.verbose,
    )
    return 0


def _webhook_serve(args) -> int:
    from cvat_kfp.pipelines.webhook.rules import RulesError
    from cvat_kfp.pipelines.webhook.server import WebhookSetupError, serve

    try:
        serve(
            host=args.listen,
            port=args.port,
            log_level=args.log_level,
            rules_path=args.rules,
            database=args.database,
            cvat_url=args.cvat_url or os.environ.get("CVAT_URL", ""),
            kfp_host=args.host,
            kfp_namespace=args.namespace,
            retry_base_s=args.retry_delay,
            retry_max_s=args.max_retry_delay,
        )
    except (RulesError, WebhookSetupError) as error:
        print(f"cvat-kfp webhook serve: {error}", file=sys.stderr)
        return 2
    return 0


def _webhook_register(args) -> int:
    from cvat_kfp.pipelines.webhook.server import WebhookSetupError, register

    try:
        print(
            register(
                cvat_url=args.cvat_url or os.environ.get("CVAT_URL", ""),
                project_id=args.project,
                url=args.url,
                enable_ssl=not args.no_ssl_verify,
            )
        )
    except WebhookSetupError as error:
        print(f"cvat-kfp webhook register: {error}", file=sys.stderr)
        return 1
    return 0


def _add_webhook_commands(commands) -> None:
    webhook_cmd = commands.add_parser(
        "webhook", help="train when annotation is done: the service CVAT calls, and its webhook"
    )
    actions = webhook_cmd.add_subparsers(dest="webhook_command", required=True, metavar="ACTION")
    cvat_url_help = "CVAT server, e.g. https://cvat.example.com (default: $CVAT_URL)"
    serve_cmd = actions.add_parser(
        "serve",
        help="run the service: on CVAT job/task updates, submit the training the rules name "
        "(secret from $CVAT_WEBHOOK_SECRET; CVAT credentials from $CVAT_ACCESS_TOKEN)",
    )
    serve_cmd.add_argument("--rules", required=True, help="the rules file (YAML)")
    serve_cmd.add_argument(
        "--database",
        default="cvat-kfp-webhook.sqlite",
        help="SQLite file of what was submitted (default: %(default)s)",
    )
    serve_cmd.add_argument("--cvat-url", help=cvat_url_help)
    serve_cmd.add_argument("--listen", default="0.0.0.0", help="address (default: %(default)s)")
    serve_cmd.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    serve_cmd.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    serve_cmd.add_argument(
        "--host",
        help="Kubeflow Pipelines API endpoint (default: $KF_PIPELINES_ENDPOINT); a bearer token "
        "is read from $KFP_TOKEN",
    )
    serve_cmd.add_argument("--namespace", help="Kubernetes namespace (multi-user Kubeflow)")
    serve_cmd.add_argument(
        "--retry-delay",
        type=float,
        default=5.0,
        help="seconds before retrying a failed submission or CVAT check, doubling each time "
        "(default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--max-retry-delay", type=float, default=300.0, help="longest wait (default: %(default)s)"
    )
    serve_cmd.set_defaults(handler=_webhook_serve)
    register_cmd = actions.add_parser(
        "register",
        help="create (or update) a CVAT project's webhook to the service; secret from "
        "$CVAT_WEBHOOK_SECRET",
    )
    register_cmd.add_argument("--project", type=int, required=True, help="CVAT project id")
    register_cmd.add_argument(
        "--url", required=True, help="the service's /webhook address as CVAT reaches it"
    )
    register_cmd.add_argument("--cvat-url", help=cvat_url_help)
    register_cmd.add_argument(
        "--no-ssl-verify",
        action="store_true",
        help="let CVAT skip verifying the service's TLS certificate",
    )
    register_cmd.set_defaults(handler=_webhook_register)


def _add_image_options(command) -> None:
    command.add_argument("--image", help="component image (default: the one for this version)")
    command.add_argument("--gpu-image", help="training component image")


def _add_cluster_options(command) -> None:
    command.add_argument(
        "--host",
        help="Kubeflow Pipelines API endpoint, e.g. https://kubeflow.example.com/pipeline "
        "(default: $KF_PIPELINES_ENDPOINT); a bearer token is read from $KFP_TOKEN",
    )
    command.add_argument("--namespace", help="Kubernetes namespace (multi-user Kubeflow)")
    _add_image_options(command)


def build_parser() -> argparse.ArgumentParser:
    from cvat_kfp.components.common.component_image import PACKAGE_VERSION

    names = ", ".join(registry.PIPELINES)
    parser = argparse.ArgumentParser(
        prog="cvat-kfp",
        description="CVAT annotations → trained TensorFlow models, as Kubeflow Pipelines. "
        f"Pipelines: {names}.",
    )
    parser.add_argument("--version", action="version", version=f"cvat-kfp {PACKAGE_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_cmd = commands.add_parser(
        "run", help="run a pipeline on this machine (kfp.local), stage by stage"
    )
    run_cmd.add_argument("pipeline", metavar="PIPELINE", help=names)
    run_cmd.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help=PARAM_HELP)  # fmt: skip
    run_cmd.add_argument(
        "--work-dir", default="runs", help="where outputs and logs go (default: %(default)s)"
    )
    run_cmd.add_argument("--verbose", action="store_true", help="stream every task's full log")
    run_cmd.set_defaults(handler=_run)

    compile_cmd = commands.add_parser(
        "compile", help="compile the pipelines to YAML for upload in the Kubeflow UI"
    )
    compile_cmd.add_argument(
        "pipelines", nargs="*", help=f"pipelines to compile (default: all: {names})"
    )
    compile_cmd.add_argument(
        "--output-dir",
        default=str(registry.COMPILED_DIR),
        help="where the YAML goes (default: %(default)s)",
    )
    _add_image_options(compile_cmd)
    compile_cmd.set_defaults(handler=_compile)

    submit_cmd = commands.add_parser("submit", help="start a run on a Kubeflow Pipelines cluster")
    submit_cmd.add_argument("pipeline", metavar="PIPELINE", help=names)
    submit_cmd.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                            help=PARAM_HELP)  # fmt: skip
    submit_cmd.add_argument(
        "--experiment", default="cvat-kfp", help="experiment (created if new; %(default)s)"
    )
    submit_cmd.add_argument("--run-name", help="default: PIPELINE and the date")
    caching = submit_cmd.add_mutually_exclusive_group()
    caching.add_argument("--caching", dest="caching", action="store_true", default=None,
                         help="cache every stage, training included")  # fmt: skip
    caching.add_argument(
        "--no-caching",
        dest="caching",
        action="store_false",
        help="cache nothing (default: data stages cached, training not)",
    )
    _add_cluster_options(submit_cmd)
    submit_cmd.set_defaults(handler=_submit)

    upload_cmd = commands.add_parser(
        "upload", help="upload a pipeline to a cluster (a new version if it exists)"
    )
    upload_cmd.add_argument("pipeline", metavar="PIPELINE", help=names)
    upload_cmd.add_argument("--version", help="version name (default: package version and date)")
    _add_cluster_options(upload_cmd)
    upload_cmd.set_defaults(handler=_upload)

    describe_cmd = commands.add_parser(
        "describe", help="list a pipeline's parameters: type, default, meaning"
    )
    describe_cmd.add_argument("pipelines", nargs="*", metavar="PIPELINE", help="default: all")
    describe_cmd.set_defaults(handler=_describe)

    demo_cmd = commands.add_parser(
        "demo",
        help="generate a synthetic CVAT COCO 1.0 export and train, evaluate and export a "
        "light RetinaNet on it locally (CPU, a few minutes)",
    )
    demo_cmd.add_argument(
        "--work-dir", default="demo", help="where data and runs go (default: %(default)s)"
    )
    demo_cmd.add_argument(
        "--maskrcnn", action="store_true", help="run maskrcnn_training (light Mask R-CNN) instead"
    )
    demo_cmd.add_argument(
        "--images", type=int, default=None, help="synthetic images (default: per pipeline)"
    )
    demo_cmd.add_argument("--seed", type=int, default=0)
    demo_cmd.add_argument("--verbose", action="store_true", help="stream every task's full log")
    demo_cmd.set_defaults(handler=_demo)
    _add_webhook_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _set_images(args)
    from cvat_kfp.pipelines.cluster import ClusterError
    from cvat_kfp.pipelines.local_run import LocalRunError
    from cvat_kfp.pipelines.parameters import ParameterError

    try:
        return args.handler(args)
    except ParameterError as error:
        print(f"cvat-kfp {args.command}: {error}", file=sys.stderr)
        return 2
    except (LocalRunError, ClusterError) as error:
        print(f"cvat-kfp {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
