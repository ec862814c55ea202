from typing import Any

from .cmd_base import Command

class DumpDB(Command):
    def execute(self, opt_values: dict[str, Any], pos_args: list[str]) -> int: ...
