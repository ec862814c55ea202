from typing import Any

class ModuleTaskLoader:
    def __init__(self, mod_dict: Any) -> None: ...

class Command:
    name: str | None
    doc_purpose: str
    doc_usage: str
    def __init__(self, config: Any = None, bin_name: str = ..., opt_vals: Any = None, **kwargs: Any) -> None: ...
    def execute(self, opt_values: dict[str, Any], pos_args: list[str]) -> int: ...
