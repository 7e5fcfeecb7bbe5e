"""export-annotations: whatever a team has in CVAT becomes one validated Dataset directory.

The source is a CVAT export (folder or archive; local, gs:// or https://) or a CVAT server
(tasks, projects, jobs, exported with images as COCO 1.0 or the format asked for). Several server
exports merge into one Dataset: classes by name, file names kept apart by a per-source folder.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..common.cvat_client import check_cvat_url
from ..common.dataset import Dataset
from ..common.redaction import redact_url
from ..common.report import Report, ReportError, write_output
from .builder import STAGE, DatasetBuilder
from .formats import AUTO, read_export, resolve_format

SERVER_FORMAT = "COCO 1.0"  # what a server export is requested as by default


@dataclass(frozen=True)
class ExportAnnotationsResult:
    dataset: Dataset
    report: Report
    format_name: str  # the format the export was read as
    sources: list[str]  # where it came from, secrets redacted
    metadata: dict[str, dict]  # keyed by the face's output: dataset


def parse_ids(ids: str | list | tuple | None, what: str) -> list[int]:
    """Ids as a user writes them in a pipeline parameter: "12, 15" or [12, 15]."""
    if ids in (None, ""):
        return []
    items = ids.replace(";", ",").split(",") if isinstance(ids, str) else list(ids)
    parsed = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not text.isdigit() or int(text) <= 0:
            raise ValueError(f"{what}: {text!r} is not a positive integer id (e.g. '12, 15')")
        parsed.append(int(text))
    return parsed


def run_export_annotations(
    dataset_dir: str | Path,
    report_path: str | Path,
    *,
    source: str = "",
    annotation_format: str = AUTO,
    cvat_url: str = "",
    task_ids=(),
    project_ids=(),
    job_ids=(),
    completed_jobs_only: bool = False,
    group_by_task: bool = False,
    skip_bad_images: bool = False,
) -> ExportAnnotationsResult:
    """Read an export (`source`) or pull one from a CVAT server (`cvat_url` + ids) into the Dataset
    directory `dataset_dir`.

    The report is saved into `dataset_dir` (report.json/.md/.html) and as Markdown to
    `report_path`, also when the export is refused; then ReportError says what was refused and
    where. Downloads and extracted archives live in a scratch folder under the system temp
    directory, removed when the run ends.
    """
    task_ids = parse_ids(task_ids, "task_ids")
    project_ids = parse_ids(project_ids, "project_ids")
    job_ids = parse_ids(job_ids, "job_ids")
    has_ids = bool(task_ids or project_ids or job_ids)
    has_source = bool(source.strip())
    # A cvat_url beside a source (and no ids) is the server the training pipelines pre-annotate
    # on afterwards: the annotations still come from the source.
    from_server = bool(cvat_url.strip()) and not has_source
    if has_source and has_ids:
        raise ValueError(
            "give exactly one source: `source` (a CVAT export: folder, archive, gs:// or https:// "
            "URI) or `cvat_url` with task, project or job ids, not both"
        )
    if not has_source and not from_server:
        raise ValueError(
            "give exactly one source: `source` (a CVAT export: folder, archive, gs:// or https:// "
            "URI) or `cvat_url` with task, project or job ids"
        )
    if from_server:
        cvat_url = check_cvat_url(cvat_url)
    if from_server and not has_ids:
        raise ValueError(
            f"cvat_url {redact_url(cvat_url)} needs task_ids, project_ids or job_ids to export"
        )

    report = Report(STAGE)
    builder = DatasetBuilder(report)
    with tempfile.TemporaryDirectory(prefix="cvat-export-") as scratch:
        scratch = Path(scratch)
        try:
            if from_server:
                format_name, sources = _read_server_exports(
                    builder,
                    scratch,
                    cvat_url,
                    annotation_format,
                    dict(task_ids=task_ids, project_ids=project_ids, job_ids=job_ids),
                    completed_jobs_only=completed_jobs_only,
                    group_by_task=group_by_task,
                )
            else:
                format_name, sources = _read_source(builder, scratch, source, annotation_format)
            dataset = builder.build(dataset_dir, skip_bad_images=skip_bad_images)
        except ReportError:
            _save_report(report, dataset_dir, report_path)
            raise
    _save_report(report, dataset_dir, report_path)
    metadata = {**dataset.metadata(), "format": format_name, "sources": sources}
    return ExportAnnotationsResult(dataset, report, format_name, sources, {"dataset": metadata})


def _save_report(report: Report, dataset_dir: str | Path, report_path: str | Path) -> None:
    report.save(dataset_dir)  # the Dataset carries its own report
    write_output(report_path, report.to_markdown())


def _read_source(builder, scratch: Path, source: str, format_name: str):
    from ..common.storage import redacted
    from .sources import fetch_source

    root = fetch_source(source, scratch / "source")
    read_as = read_export(root, builder, format_name)
    label = redacted(source)  # a signed URL's query is a secret: not in metadata or the report
    builder.report.note("read", f"read as {read_as}", label)
    return read_as, [label]


def _read_server_exports(
    builder, scratch, cvat_url, format_name, ids, *, completed_jobs_only, group_by_task
):
    from .cvat_server import export_from_cvat
    from .sources import fetch_source

    # COCO 1.0 unless asked otherwise: "CVAT for images 1.1" carries each shape's `source`.
    format_name = (
        SERVER_FORMAT if format_name.strip().lower() == AUTO else resolve_format(format_name)
    )
    server = redact_url(cvat_url)
    exports = export_from_cvat(
        cvat_url,
        scratch / "downloads",
        completed_jobs_only=completed_jobs_only,
        format_name=format_name,
        **ids,
    )
    for index, export in enumerate(exports):
        root = fetch_source(str(export.archive), scratch / f"export-{index}")
        # A task is one group only on request: most tasks are unrelated image batches, and one
        # group per task would leave a one-task export nothing to split.
        builder.default_group = export.group if group_by_task else None
        builder.file_prefix = Path(export.archive).stem if len(exports) > 1 else ""
        read_export(root, builder, format_name)
        builder.report.note("read", f"{export.resource}: read as {format_name}", server)
    builder.default_group, builder.file_prefix = None, ""
    return format_name, [f"{server} {export.resource}" for export in exports]
