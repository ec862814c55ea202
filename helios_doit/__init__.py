"""helios-doit: run chunked Helios render jobs as a crash-safe, incremental doit build."""
__version__ = "0.1.0"
