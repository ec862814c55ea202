"""doit entry point: `doit -n 4 job=path/to/job.json` (without `job=`, the bundled example)."""
from helios_doit.tasks.session import EXAMPLE_JOB, dodo

globals().update(dodo(EXAMPLE_JOB))
