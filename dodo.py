"""doit entry point: `doit -n 4 job=path/to/job.json` (without `job=`, the bundled example)."""
import sys

from doit import get_var, loader

from helios_doit.tasks.options import from_vars
from helios_doit.tasks.refuse import load_or_exit, refuse_bad
from helios_doit.tasks.session import EXAMPLE_JOB, namespace

# doit has changed into this file's folder; the user's paths are relative to where they started.
JOB = load_or_exit(get_var("job") or EXAMPLE_JOB, get_var("output_root"), loader.initial_workdir)
OPTIONS = refuse_bad(lambda: from_vars(get_var, sys.argv))
globals().update(namespace(JOB, merge=get_var("merge"), options=OPTIONS))
