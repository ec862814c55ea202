"""A job as doit tasks: run options, the task action and completion check, the pure graph, and the run session."""
