from typing import Any, TextIO

from .exceptions import BaseFail

class ConsoleReporter:
    desc: str
    outstream: TextIO
    failures: list[dict[str, Any]]
    runtime_errors: list[str]
    def __init__(self, outstream: TextIO, options: dict[str, Any]) -> None: ...
    def execute_task(self, task: Any) -> None: ...
    def add_failure(self, task: Any, fail: BaseFail) -> None: ...
