"""doit entry point: `doit -n 4 job=path/to/job.json` (without `job=`, the bundled example)."""
from doit import get_var

from helios_doit.tasks import EXAMPLE_JOB, load_or_exit, namespace

globals().update(namespace(load_or_exit(get_var("job") or EXAMPLE_JOB, get_var("output_root"))))
