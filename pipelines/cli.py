"""The `cvat-kfp` command line."""

from __future__ import annotations

import argparse
import os
import sys

from cvat_kfp.pipelines import registry


def _compile(args) -> int:
    if args.image:
        os.environ["CVAT_KFP_IMAGE"] = args.image
    if args.gpu_image:
        os.environ["CVAT_KFP_GPU_IMAGE"] = args.gpu_image
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


def _demo(args) -> int:
    from cvat_kfp.pipelines.demo import run_demo

    run_demo(args.work_dir, num_images=args.images, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cvat_kfp.components.common.component_image import PACKAGE_VERSION

    parser = argparse.ArgumentParser(
        prog="cvat-kfp",
        description="CVAT annotations → trained TensorFlow models, as Kubeflow Pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"cvat-kfp {PACKAGE_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_cmd = commands.add_parser(
        "compile", help="compile the pipelines to YAML for upload in the Kubeflow UI"
    )
    compile_cmd.add_argument(
        "pipelines",
        nargs="*",
        help=f"pipelines to compile (default: all: {', '.join(registry.PIPELINES)})",
    )
    compile_cmd.add_argument(
        "--output-dir",
        default=str(registry.COMPILED_DIR),
        help="where the YAML goes (default: %(default)s)",
    )
    compile_cmd.add_argument("--image", help="component image (default: the one for this version)")
    compile_cmd.add_argument("--gpu-image", help="training component image")
    compile_cmd.set_defaults(handler=_compile)

    demo_cmd = commands.add_parser(
        "demo", help="run the suite locally (kfp.local) on a generated shapes dataset"
    )
    demo_cmd.add_argument(
        "--work-dir", default="demo", help="where data and runs go (default: %(default)s)"
    )
    demo_cmd.add_argument(
        "--images", type=int, default=40, help="synthetic images (default: %(default)s)"
    )
    demo_cmd.add_argument("--seed", type=int, default=0)
    demo_cmd.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
