initial_workdir: str | None
