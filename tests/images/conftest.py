"""tests/images: the component images, checked without a Docker engine (none runs here or in CI)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "image_replay: replays a Dockerfile's pip installs in a fresh venv (a few minutes, needs "
        "the package index); part of `make test`, deselect with -m 'not image_replay'",
    )
