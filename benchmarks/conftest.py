"""The harness's pytest plugin: --bench-* options, case parametrisation, the `measure` fixtures."""

pytest_plugins = ("ssl_fast.bench.plugin",)
