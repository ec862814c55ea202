from typing import Any

class ModuleTaskLoader:
    def __init__(self, mod_dict: Any) -> None: ...
