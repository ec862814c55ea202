"""`helios-doit schema`: the JobSpec as JSON Schema (draft 2020-12), for editors and CI.

Generated from the pydantic models the runner validates jobs with, so an editor that knows it
completes and explains every field, and CI can reject a malformed job before any runner sees it.
The schema says what each field must be; the runner's own checks across fields (paths inside the
job's folder, contiguous frame ranges, the merge order) are `helios-doit job run`'s, which
refuses before anything runs.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..spec.model import json_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "e.g. helios-doit schema > helios-job.schema.json"


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
    return 0
