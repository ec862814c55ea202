# The part of doit 0.37 that helios-doit uses: doit ships no type information.
from . import loader as loader

def get_var(name: str, default: str | None = None) -> str | None: ...
