"""`helios-doit schema`: the JobSpec as JSON Schema, which editors and CI check jobs against; the
jobs helios-doit ships and emits, and the ones Helios writes, pass it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness import CLI, REPO, fake_helios
from jsonschema import Draft202012Validator


@pytest.fixture(scope="module")
def schema() -> dict:
    result = subprocess.run([*CLI, "schema"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return json.loads(result.stdout)


def errors(schema: dict, job: dict) -> list[str]:
    return [error.message for error in Draft202012Validator(schema).iter_errors(job)]


def test_it_is_a_draft_2020_12_schema_with_a_title_and_a_description_for_every_field(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["title"] == "Helios JobSpec" and schema["description"]
    models = [schema, schema["$defs"]["Metadata"], schema["$defs"]["Chunk"]]
    for model in models:
        for key, field in model["properties"].items():
            assert field["title"] == key and field["description"], (key, field)  # what an editor shows on hover
    assert set(schema["$defs"]["Chunk"]["required"]) == {"id", "startFrame", "frameCount", "outputFile", "command"}


@pytest.mark.parametrize("example", ["orbit", "beeps"])
def test_the_bundled_jobs_pass(schema, example):
    assert errors(schema, json.loads((REPO / "examples" / example / "job.json").read_text())) == []


def test_jobs_emitted_by_render_and_by_helios_pass(schema, tmp_path):
    emitted = subprocess.run([*CLI, "render", str(REPO / "examples" / "orbit" / "composition.py"), "-o", "out.mp4",
                              "--emit-job", "job.json", "--concurrency", "3", "--duration", "1"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert emitted.returncode == 0, emitted.stderr
    assert errors(schema, json.loads((tmp_path / "job.json").read_text())) == []
    env = fake_helios(tmp_path)
    helios = subprocess.run(["helios", "render", "comp.html", "-o", "final.mp4", "--emit-job", "helios.json",
                             "--concurrency", "4", "--fps", "30", "--duration", "2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert helios.returncode == 0, helios.stderr
    assert errors(schema, json.loads((tmp_path / "helios.json").read_text())) == []


def orbit() -> dict:
    return json.loads((REPO / "examples" / "orbit" / "job.json").read_text())


def test_what_the_runner_refuses_for_its_form_the_schema_refuses_too(schema):
    job = orbit()
    job["chunks"][1]["frameCount"] = "8"
    job["metadata"]["fps"] = 0
    del job["chunks"][2]["command"]
    found = errors(schema, job)
    assert len(found) == 3, found
    assert "'8' is not of type 'integer'" in found and "'command' is a required property" in found
    assert "0 is less than or equal to the minimum of 0" in found


def test_a_job_needs_a_merge_command_or_an_output_file(schema):
    job = orbit()
    del job["mergeCommand"], job["outputFile"]
    assert errors(schema, job) != []
    assert errors(schema, {**job, "outputFile": "orbit.mp4"}) == []
    assert errors(schema, {**job, "mergeCommand": "cat a b > c"}) == []
