"""The JobSpec: models of what `helios render --emit-job` writes, and of a job ready to run.

Strict on purpose: jobs come from other programs and from people, and the runner acts on
every path in them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from ..storage.url import Remote

#: The largest whole number a JSON writer such as Helios' (JavaScript) can state exactly.
MAX_SAFE_INTEGER = 2**53 - 1
PositiveInt = Annotated[StrictInt, Field(gt=0, le=MAX_SAFE_INTEGER)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0, le=MAX_SAFE_INTEGER)]
PositiveNumber = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
NonEmptyStr = Annotated[str, Field(min_length=1, strict=True)]


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("holds a NUL byte, which no program can be given; remove it")
    return text


#: A command for the shell: no NUL byte, which exec cannot pass.
Command = Annotated[NonEmptyStr, AfterValidator(_no_nul)]

#: Where state lives, relative to the job's folder; chunk outputs may never point into it.
STATE_ROOT = ".helios-doit"


class _Model(BaseModel):
    # Unknown keys are ignored so that jobs from newer Helios versions still load.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Metadata(_Model):
    total_frames: PositiveInt = Field(alias="totalFrames")
    fps: PositiveNumber
    width: PositiveInt
    height: PositiveInt
    duration: PositiveNumber


@pydantic_dataclass(frozen=True, slots=True, config=ConfigDict(populate_by_name=True, extra="ignore"))
class Chunk:
    """A dataclass with slots, not a model: a job holds 10,000 of them for the whole run."""

    id: NonNegativeInt
    start_frame: Annotated[NonNegativeInt, Field(alias="startFrame")]
    frame_count: Annotated[PositiveInt, Field(alias="frameCount")]
    output_file: Annotated[NonEmptyStr, Field(alias="outputFile")]
    command: Command


class JobSpec(_Model):
    """Helios' job format, plus `outputFile` and `inputs`, two optional extensions of ours."""

    id: NonEmptyStr | None = None
    assets_url: NonEmptyStr | None = Field(default=None, alias="assetsUrl")
    metadata: Metadata
    chunks: list[Chunk] = Field(min_length=1)
    merge_command: Command | None = Field(default=None, alias="mergeCommand")  # None: built-in stitcher
    output_file: NonEmptyStr | None = Field(default=None, alias="outputFile")
    inputs: list[NonEmptyStr] = Field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """A validated job with every path resolved: what the task generator works from."""

    spec: JobSpec
    source: str  # the path or URL it was loaded from, for messages
    job_file: Path | None  # None for a job loaded from a URL
    job_dir: Path  # commands run here; relative paths start here
    state_dir: Path
    outputs: dict[int, str]  # chunk id -> absolute output path (strings: there may be 10,000)
    merge_output: Path | None
    inputs: tuple[Path, ...]
    output_roots: tuple[str, ...] = ()  # resolved folders outputs may be in: the job's, an output root
    remote: Remote | None = None  # where the job's outputs and records live when in a bucket

    @property
    def chunk_ids(self) -> list[int]:
        return [chunk.id for chunk in self.spec.chunks]

    @property
    def frame_order(self) -> list[int]:
        """Chunk ids by first frame: the order a merge joins them in, whatever order the job lists them."""
        return [chunk.id for chunk in sorted(self.spec.chunks, key=lambda c: c.start_frame)]
