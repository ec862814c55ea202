"""The JobSpec: models of what `helios render --emit-job` writes, and of a job ready to run.

Strict on purpose: jobs come from other programs and from people, and the runner acts on
every path in them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

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


def _title(name: str, field: Any) -> str:
    """A field's title in the JSON Schema is its key in the job (`startFrame`), as editors show it."""
    return str(field.alias or name)


class _Model(BaseModel):
    # Unknown keys are ignored so that jobs from newer Helios versions still load.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, field_title_generator=_title)


class Metadata(_Model):
    """The render as a whole: what the merged video must hold."""

    total_frames: PositiveInt = Field(alias="totalFrames", description=(
        "Frames of the whole render; the chunks' frameCount must add up to it."))
    fps: PositiveNumber = Field(description=(
        "Frames per second; every video chunk and the merged file are checked against it (29.97 for NTSC)."))
    width: PositiveInt = Field(description="Frame width in pixels; video chunks are checked against it.")
    height: PositiveInt = Field(description="Frame height in pixels; video chunks are checked against it.")
    duration: PositiveNumber = Field(description="Seconds: totalFrames / fps.")


# A dataclass with slots, not a model: a job holds 10,000 of them for the whole run.
@pydantic_dataclass(frozen=True, slots=True, config=ConfigDict(populate_by_name=True, extra="ignore",
                                                               field_title_generator=_title))
class Chunk:
    """One frame range of the render and the command that renders it (task chunk:<id>)."""

    id: Annotated[NonNegativeInt, Field(description="Unique among the chunks; the doit task is chunk:<id>.")]
    start_frame: Annotated[NonNegativeInt, Field(alias="startFrame", description=(
        "The chunk's first frame; chunk ranges must neither overlap nor leave gaps (they may start past 0)."))]
    frame_count: Annotated[PositiveInt, Field(alias="frameCount", description=(
        "How many frames the chunk renders: a video output must hold exactly these."))]
    output_file: Annotated[NonEmptyStr, Field(alias="outputFile", description=(
        "The file the command writes, relative to the job file's folder; one per chunk, inside that folder "
        "unless an output root allows another."))]
    command: Annotated[Command, Field(description=(
        "A shell command, run in the job file's folder as /bin/sh -c would run it."))]


class JobSpec(_Model):
    """Helios' job format, plus `outputFile` and `inputs`, two optional extensions of ours."""

    model_config = ConfigDict(title="Helios JobSpec", json_schema_extra={
        "description": ("A chunked render job as `helios render --emit-job` writes it, run by helios-doit "
                        "(`helios-doit job run JOB`, or `doit job=JOB`). Paths are relative to the job file's folder. "
                        "Unknown keys are ignored."),
        # What merges the chunks: a command, or the built-in stitcher into outputFile (spec.checks says it too).
        "anyOf": [{"required": ["mergeCommand"]}, {"required": ["outputFile"]}]})

    id: NonEmptyStr | None = Field(default=None, description="Optional, as in Helios: carried, not used.")
    assets_url: NonEmptyStr | None = Field(default=None, alias="assetsUrl", description=(
        "Optional, as in Helios: a bucket folder whose files a job in a bucket fetches into its folder before "
        "commands run."))
    metadata: Metadata = Field(description="The render as a whole: frames, frame rate and size.")
    chunks: list[Chunk] = Field(min_length=1, description="The frame ranges, each rendered by its own command.")
    merge_command: Command | None = Field(default=None, alias="mergeCommand", description=(
        "The shell command that stitches the chunk outputs, listed in frame order; optional when outputFile is "
        "given (then the built-in stitcher merges)."))  # None: built-in stitcher
    output_file: NonEmptyStr | None = Field(default=None, alias="outputFile", description=(
        "helios-doit's: the merged output. Without it, the OUTPUT of `helios merge OUTPUT ...` in mergeCommand."))
    inputs: list[NonEmptyStr] = Field(default_factory=list, description=(
        "helios-doit's: files every chunk depends on; editing one reruns every chunk."))


#: The JSON Schema dialect `json_schema` declares.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JobSpec as JSON Schema, for editors and CI: generated from the models above, so it
    never drifts from what the runner accepts (cross-field rules, such as paths inside the job's
    folder or contiguous frame ranges, are the runner's checks, not the schema's)."""
    schema = JobSpec.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}


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
