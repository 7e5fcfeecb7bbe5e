"""`cvat-kfp webhook`: train when annotation is done.

CVAT calls the service (`serve`) on job and task updates; when every annotation job of a task
(or of every task of a project, per rule) is done, the service submits the training pipeline the
rules file names, exactly once per annotation version, and records it in SQLite. `register`
creates the project's webhook in CVAT. See README.md, "The loop with CVAT".
"""
