"""The newest upload of a key owns its output (finding 10): an older version finishing last never overwrites
a newer one's result, and a version whose format changed leaves one output for its key, not two."""

from __future__ import annotations

from pipeline_world import PipelineWorld

from common.contract import JobOptions, OutputFormat, WorkItem
from gpu_batch.worker.outputs import Placed, Superseded, place_output, sequencer_newer, sibling_keys


def item(world: PipelineWorld, sequencer: str, fmt: OutputFormat = OutputFormat.JPEG) -> WorkItem:
    ext = {OutputFormat.JPEG: ".jpg", OutputFormat.PNG: ".png"}[fmt]
    return WorkItem(job_id=f"job-{sequencer}", input_bucket=world.settings.input_bucket, input_key="uploads/a.jpg",
                    output_bucket=world.settings.output_bucket, output_key=f"outputs/a{ext}",
                    options=JobOptions(output_format=fmt), input_sequencer=sequencer)


def place(world: PipelineWorld, work: WorkItem, data: bytes) -> Placed | Superseded:
    return place_output(world.raw_s3, work, data=data, content_type="image/jpeg", metadata={"job-id": work.job_id})


def body(world: PipelineWorld, key: str) -> bytes:
    return bytes(world.raw_s3.get_object(Bucket=world.settings.output_bucket, Key=key)["Body"].read())


def test_sequencers_compare_as_s3_documents_it() -> None:
    assert sequencer_newer("0055AED6DCD90281E5", "0055AED6DCD90281E6") is True
    assert sequencer_newer("FF", "0100") is True  # left-padded with zeros, then compared
    assert sequencer_newer("0100", "FF") is False
    assert sequencer_newer("AB", "ab") is None and sequencer_newer(None, "01") is None


def test_an_older_version_finishing_last_is_superseded_and_leaves_the_newer_result(world: PipelineWorld) -> None:
    older, newer = item(world, "0000000000000001"), item(world, "0000000000000002")
    assert isinstance(place(world, newer, b"newer"), Placed)
    outcome = place(world, older, b"older")
    assert outcome == Superseded("outputs/a.jpg")
    assert body(world, "outputs/a.jpg") == b"newer"


def test_a_newer_version_replaces_an_older_result_and_a_retry_of_the_same_version_rewrites_it(
        world: PipelineWorld) -> None:
    older, newer = item(world, "01"), item(world, "02")
    assert isinstance(place(world, older, b"older"), Placed)
    assert isinstance(place(world, newer, b"newer"), Placed)
    assert isinstance(place(world, newer, b"newer, again"), Placed)  # the same version's retry after a crash
    assert body(world, "outputs/a.jpg") == b"newer, again"


def test_a_format_change_leaves_one_output_for_the_key_whichever_finishes_last(world: PipelineWorld) -> None:
    """`uploads/a.jpg` first held JPEG bytes, then PNG bytes: its outputs are `a.jpg` and `a.png`."""
    jpeg_v1, png_v2 = item(world, "01", OutputFormat.JPEG), item(world, "02", OutputFormat.PNG)
    assert isinstance(place(world, jpeg_v1, b"v1"), Placed)
    assert isinstance(place(world, png_v2, b"v2"), Placed)
    keys = {o["Key"] for o in world.raw_s3.list_objects_v2(Bucket=world.settings.output_bucket).get("Contents", [])}
    assert keys == {"outputs/a.png"}  # the older version's output under the other name is removed
    png_v3, jpeg_v4 = item(world, "03", OutputFormat.PNG), item(world, "04", OutputFormat.JPEG)
    assert isinstance(place(world, jpeg_v4, b"v4"), Placed)
    assert place(world, png_v3, b"v3") == Superseded("outputs/a.jpg")  # older, finishing last: removes itself
    keys = {o["Key"] for o in world.raw_s3.list_objects_v2(Bucket=world.settings.output_bucket).get("Contents", [])}
    assert keys == {"outputs/a.jpg"} and body(world, "outputs/a.jpg") == b"v4"


def test_sibling_names_cover_every_other_format() -> None:
    assert sibling_keys("outputs/x/a.jpg", OutputFormat.JPEG) == [
        "outputs/x/a.png", "outputs/x/a.webp", "outputs/x/a.avif", "outputs/x/a.tif"]
