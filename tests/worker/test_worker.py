"""The worker end to end: a subprocess serving the protocol, training with the sd-scripts stand-in."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import zipfile
from dataclasses import replace

from worker_harness import FACES, HF_TOKEN, POD_ID, RUNPOD_KEY, TOKEN, Stubs, make_spec

from sim.sdscripts import safetensors_io
from sim.testdata import snapshot_zip
from worker.protocol import SHA256_HEADER, WorkerStatus


async def failed_run(start_worker, standin_env: dict[str, str]) -> dict:
    """Train with a stand-in failure mode switched on; return the status once the run has failed."""
    zipped = snapshot_zip()
    worker = await start_worker(make_spec(zip_bytes=zipped), standin_env)
    assert (await worker.upload(zipped)).status == 201
    status = await worker.wait_state("finished", "failed")
    assert status["state"] == "failed"
    return status


async def test_health_is_open_and_everything_else_needs_the_token(start_worker):
    zipped = snapshot_zip()
    worker = await start_worker(make_spec(zip_bytes=zipped))
    async with worker.session.get(f"{worker.url}/health") as response:
        assert response.status == 200
        assert (await response.json())["ok"] is True
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
        async with worker.session.get(f"{worker.url}/status", headers=headers) as response:
            assert response.status == 401
        async with worker.session.put(f"{worker.url}/dataset", data=zipped, headers=headers) as response:
            assert response.status == 401
        async with worker.session.post(f"{worker.url}/cancel", headers=headers) as response:
            assert response.status == 401
    status = WorkerStatus.from_json(await worker.status())
    assert status.state in ("starting", "waiting_dataset")


async def test_dataset_sha_mismatch_is_refused_then_the_right_one_accepted_once(start_worker):
    zipped = snapshot_zip()
    worker = await start_worker(make_spec(zip_bytes=zipped))
    # The header claims the job's sha but the body differs: caught after streaming.
    response = await worker.upload(zipped[:-10] + b"0123456789", sha=worker.spec.dataset_sha256)
    assert response.status == 400
    # A sha that is not the job's snapshot is refused before reading.
    response = await worker.upload(b"other", sha=hashlib.sha256(b"other").hexdigest())
    assert response.status == 400
    assert not (worker.work_dir / "dataset").exists()
    response = await worker.upload(zipped)
    assert response.status == 201
    assert sorted(p.name for p in (worker.work_dir / "dataset" / "img").iterdir())[:2] == [
        "000.jpg",
        "000.txt",
    ]
    response = await worker.upload(zipped)
    assert response.status == 409


async def test_zip_with_path_escape_is_refused(start_worker):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil.txt", "x")
    evil = buffer.getvalue()
    worker = await start_worker(make_spec(zip_bytes=evil))
    response = await worker.upload(evil)
    assert response.status == 400
    assert not (worker.work_dir.parent / "evil.txt").exists()


async def test_training_runs_lists_and_serves_files_then_ack_terminates_the_pod(start_worker, stubs: Stubs):
    zipped = snapshot_zip()
    spec = make_spec(
        zip_bytes=zipped,
        prompts=f"ohwx man {HF_TOKEN} --w 256 --h 256 --d 3\nohwx man, beach --w 256 --h 256\n",
    )
    worker = await start_worker(spec)
    assert (await worker.upload(zipped)).status == 201
    seen_steps: set[int] = set()

    def done(status: dict) -> bool:
        if status["state"] == "training":
            seen_steps.add(status["step"])
        return status["state"] in ("finished", "failed")

    status = WorkerStatus.from_json(await worker.wait_for(done))
    assert status.state == "finished", status.error
    assert (status.step, status.total_steps) == (12, 12)
    assert status.loss is not None and 0 < status.loss < 1
    assert status.epoch == 2  # 3 images x 2 repeats = 6 batches per epoch
    # Samples every 4 steps, two prompts each; checkpoints at 6, 12 and the final file.
    assert [(s.step, s.prompt_index) for s in status.samples] == [
        (4, 0),
        (4, 1),
        (8, 0),
        (8, 1),
        (12, 0),
        (12, 1),
    ]
    assert status.samples[0].name.startswith("elena_000004_00_") and status.samples[0].name.endswith("_3.png")
    assert [(c.name, c.step) for c in status.checkpoints] == [
        ("elena-step00000006.safetensors", 6),
        ("elena-step00000012.safetensors", 12),
        ("elena.safetensors", 12),
    ]
    # The base model came from "Hugging Face" with the token, and is linked where config.toml says.
    assert stubs.hf_requests and stubs.hf_requests[0]["Authorization"] == f"Bearer {HF_TOKEN}"
    assert (worker.work_dir / "models" / "base.safetensors").read_bytes()[:10] == b"fake-base-"
    # Secrets never reach the log tail (the prompt echoed the HF token on purpose).
    assert all(HF_TOKEN not in line and TOKEN not in line for line in status.log_tail)
    assert any("***" in line for line in status.log_tail)

    final = status.checkpoints[-1]
    chunks: list[bytes] = []
    offset, chunk = 0, 700
    while offset < final.size:
        end = min(offset + chunk, final.size) - 1
        headers = {**worker.auth, "Range": f"bytes={offset}-{end}"}
        async with worker.session.get(
            f"{worker.url}/files/checkpoints/{final.name}", headers=headers
        ) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes {offset}-{end}/{final.size}"
            assert response.headers[SHA256_HEADER] == final.sha256
            chunks.append(await response.read())
        offset = end + 1
    blob = b"".join(chunks)
    assert hashlib.sha256(blob).hexdigest() == final.sha256
    local = worker.work_dir / "downloaded.safetensors"
    local.write_bytes(blob)
    metadata = safetensors_io.read_metadata(local)
    assert metadata["ss_steps"] == "12" and metadata["ss_network_dim"] == "8"
    async with worker.session.get(
        f"{worker.url}/files/samples/{status.samples[-1].name}", headers=worker.auth
    ) as r:
        assert r.status == 200
        assert hashlib.sha256(await r.read()).hexdigest() == status.samples[-1].sha256
    for path in (
        "/files/checkpoints/../config.toml",
        "/files/checkpoints/config.toml",
        "/files/other/elena.safetensors",
    ):
        async with worker.session.get(f"{worker.url}{path}", headers=worker.auth) as response:
            assert response.status == 404

    async with worker.session.post(f"{worker.url}/ack", headers=worker.auth) as response:
        assert response.status == 200
        assert (await response.json())["state"] == "acknowledged"
    assert await asyncio.wait_for(worker.proc.wait(), 30) == 0
    terminate = [call for call in stubs.graphql if "podTerminate" in call["query"]]
    assert len(terminate) == 1
    assert POD_ID in terminate[0]["query"] and terminate[0]["auth"] == f"Bearer {RUNPOD_KEY}"


async def test_nan_loss_aborts_at_once(start_worker):
    zipped = snapshot_zip()
    worker = await start_worker(
        make_spec(steps=300, zip_bytes=zipped),
        {"SDSTANDIN_NAN_AT_STEP": "5", "SDSTANDIN_STEP_SECONDS": "0.03"},
    )
    assert (await worker.upload(zipped)).status == 201
    status = await worker.wait_state("finished", "failed", "cancelled")
    assert status["state"] == "failed"
    assert "NaN" in status["error"]
    assert status["step"] < 300
    assert status["loss"] is None
    assert "elena.safetensors" not in [c["name"] for c in status["checkpoints"]]


async def test_cuda_out_of_memory_is_reported(start_worker):
    status = await failed_run(start_worker, {"SDSTANDIN_OOM_AT_STEP": "3"})
    assert "out of GPU memory" in status["error"]
    assert any("CUDA out of memory" in line for line in status["log_tail"])


async def test_exit_zero_without_output_is_a_failure(start_worker):
    status = await failed_run(start_worker, {"SDSTANDIN_SKIP_FINAL_SAVE": "1"})
    assert "exited 0 without output" in status["error"]


async def test_no_images_is_exit_zero_without_output(start_worker):
    # The images are there (the upload check passes) but sd-scripts finds none, as it does when
    # every file is filtered out: it prints "No data found" and exits 0 with nothing written.
    status = await failed_run(start_worker, {"SDSTANDIN_NO_IMAGES": "1"})
    assert "exited 0 without output" in status["error"] and "No data found" in status["error"]


async def test_a_zip_without_images_is_refused_at_upload(start_worker):
    zipped = snapshot_zip(with_images=False)
    worker = await start_worker(make_spec(zip_bytes=zipped))
    async with worker.session.put(
        f"{worker.url}/dataset",
        data=zipped,
        headers={**worker.auth, SHA256_HEADER: worker.spec.dataset_sha256},
    ) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert "image_dir 'dataset/img' is not in the uploaded dataset" in error
    assert not (worker.work_dir / "dataset").exists()
    assert (await worker.status())["state"] in ("starting", "waiting_dataset")


async def test_a_zip_laid_out_from_the_work_dir_is_refused_at_upload(start_worker):
    # Entries named dataset/img/... would unpack to dataset/dataset/img: dataset.toml's image_dir
    # would be missing, and sd-scripts would exit 0 without training. Refused, with what is there.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, photo in enumerate(sorted((FACES / "obama").glob("*.jpg"))[:2]):
            archive.write(photo, f"dataset/img/{index:03d}.jpg")
            archive.writestr(f"dataset/img/{index:03d}.txt", "ohwx man, photo")
        archive.writestr("config.toml", "[x]\n")
    zipped = buffer.getvalue()
    worker = await start_worker(make_spec(zip_bytes=zipped))
    async with worker.session.put(
        f"{worker.url}/dataset",
        data=zipped,
        headers={**worker.auth, SHA256_HEADER: worker.spec.dataset_sha256},
    ) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert "'dataset/img' is not in the uploaded dataset" in error and "dataset/dataset" in error


async def test_config_naming_models_the_worker_does_not_fetch_fails_before_downloading(
    start_worker, stubs: Stubs
):
    zipped = snapshot_zip()
    spec = make_spec(zip_bytes=zipped)
    wrong = replace(
        spec,
        config_toml=spec.config_toml.replace("models/base.safetensors", "models/other.safetensors").replace(
            'sample_prompts = "prompts.txt"', 'sample_prompts = "dataset/prompts.txt"'
        ),
    )
    worker = await start_worker(wrong)
    status = await worker.wait_state("failed", "waiting_dataset")
    assert status["state"] == "failed"
    assert (
        "pretrained_model_name_or_path = 'models/other.safetensors', but the worker puts that file at "
        "'models/base.safetensors'"
    ) in status["error"]
    assert "sample_prompts = 'dataset/prompts.txt'" in status["error"]
    assert stubs.hf_requests == []  # nothing downloaded


async def test_killed_trainer_is_reported_with_the_signal(start_worker):
    status = await failed_run(start_worker, {"SDSTANDIN_KILL_AT_STEP": "3"})
    assert "SIGKILL" in status["error"]


async def test_cancel_stops_training(start_worker):
    zipped = snapshot_zip()
    worker = await start_worker(make_spec(steps=2000, zip_bytes=zipped), {"SDSTANDIN_STEP_SECONDS": "0.1"})
    assert (await worker.upload(zipped)).status == 201
    await worker.wait_for(lambda s: s["state"] == "training" and s["step"] >= 2)
    async with worker.session.post(f"{worker.url}/cancel", headers=worker.auth) as response:
        assert response.status == 200
    status = await worker.status()
    assert status["state"] == "cancelled"
    step = status["step"]
    await asyncio.sleep(0.5)
    assert (await worker.status())["step"] == step  # nothing is training any more
    async with worker.session.post(f"{worker.url}/cancel", headers=worker.auth) as response:
        assert response.status == 409
    assert worker.proc.returncode is None  # the worker waits for the bot's ack


async def test_deadline_stops_everything_and_terminates_the_pod(start_worker, stubs: Stubs):
    zipped = snapshot_zip()
    spec = make_spec(steps=2000, zip_bytes=zipped, deadline_in=4.0)
    worker = await start_worker(spec, {"SDSTANDIN_STEP_SECONDS": "0.1"})
    assert (await worker.upload(zipped)).status == 201
    assert await asyncio.wait_for(worker.proc.wait(), 40) == 0
    assert time.time() >= spec.deadline_unix
    assert any("podTerminate" in call["query"] and POD_ID in call["query"] for call in stubs.graphql)


async def test_a_dataset_sent_in_parts_resumes_where_the_worker_stopped_receiving(start_worker, tmp_path):
    zipped = snapshot_zip()
    worker = await start_worker(make_spec(zip_bytes=zipped))
    sha = hashlib.sha256(zipped).hexdigest()

    async def put(first: int, last: int) -> tuple[int, dict]:
        headers = {
            **worker.auth,
            "X-Content-SHA256": sha,
            "Content-Range": f"bytes {first}-{last}/{len(zipped)}",
        }
        async with worker.session.put(
            f"{worker.url}/dataset", data=zipped[first : last + 1], headers=headers
        ) as response:
            return response.status, await response.json()

    third = len(zipped) // 3
    assert await put(0, third - 1) == (202, {"received": third, "total": len(zipped)})
    # The bot died here; its successor asks how far the upload got, and a part sent twice is refused.
    async with worker.session.get(f"{worker.url}/dataset", headers=worker.auth) as response:
        assert (await response.json())["received"] == third
    status, body = await put(0, third - 1)
    assert status == 409 and body["received"] == third
    assert (await put(third, 2 * third - 1))[0] == 202
    status, body = await put(2 * third, len(zipped) - 1)
    assert status == 201 and body["sha256"] == sha
    assert (await worker.status())["state"] in ("starting", "waiting_dataset", "training", "finished")
    status, body = await put(0, third - 1)
    assert status == 409 and body.get("complete") is True


async def test_the_bot_sends_a_large_dataset_in_parts(start_worker, tmp_path):
    from bot.training.worker_client import MIN_UPLOAD_PART, WorkerClient

    zipped = snapshot_zip()
    assert len(zipped) > 3 * MIN_UPLOAD_PART
    worker = await start_worker(make_spec(zip_bytes=zipped))
    path = tmp_path / "dataset.zip"
    path.write_bytes(zipped)
    client = WorkerClient(worker.session, worker.url, TOKEN, upload_part_size=MIN_UPLOAD_PART)
    assert await client.upload_dataset(path, hashlib.sha256(zipped).hexdigest()) is True
    assert await client.upload_dataset(path, hashlib.sha256(zipped).hexdigest()) is False  # had it


async def test_the_budget_stops_training_and_terminates_the_pod_without_the_bot(start_worker, stubs: Stubs):
    zipped = snapshot_zip()
    spec = make_spec(steps=2000, zip_bytes=zipped, budget_stop_in=4.0)
    worker = await start_worker(spec, {"SDSTANDIN_STEP_SECONDS": "0.1"})
    assert (await worker.upload(zipped)).status == 201
    await worker.wait_for(lambda s: s["state"] == "training" and s["step"] >= 1)
    assert await asyncio.wait_for(worker.proc.wait(), 40) == 0
    assert time.time() >= spec.budget_stop_unix
    assert any("podTerminate" in call["query"] and POD_ID in call["query"] for call in stubs.graphql)


async def test_a_finished_run_the_bot_never_collects_terminates_the_pod(start_worker, stubs: Stubs):
    zipped = snapshot_zip()
    worker = await start_worker(make_spec(steps=4, zip_bytes=zipped, unattended_stop_s=3.0))
    assert (await worker.upload(zipped)).status == 201
    await worker.wait_for(lambda s: s["state"] in ("finished", "failed"))
    last_call = time.monotonic()
    # The bot is gone: nobody calls any more. The pod must not idle, billing, until someone notices.
    assert await asyncio.wait_for(worker.proc.wait(), 40) == 0
    assert time.monotonic() - last_call >= 3.0
    assert any("podTerminate" in call["query"] and POD_ID in call["query"] for call in stubs.graphql)


async def test_a_bot_that_keeps_calling_keeps_a_finished_pod(start_worker, stubs: Stubs):
    zipped = snapshot_zip()
    worker = await start_worker(make_spec(steps=4, zip_bytes=zipped, unattended_stop_s=2.0))
    assert (await worker.upload(zipped)).status == 201
    await worker.wait_for(lambda s: s["state"] in ("finished", "failed"))
    for _ in range(12):  # 3 s of polling, longer than the limit: the bot is there, the pod stays
        assert (await worker.status())["state"] == "finished"
        await asyncio.sleep(0.25)
    assert worker.proc.returncode is None
    assert not any("podTerminate" in call["query"] for call in stubs.graphql)


async def test_base_model_sha_mismatch_fails_and_a_verified_cache_skips_the_download(
    start_worker, stubs, tmp_path
):
    zipped = snapshot_zip()
    bad = await start_worker(make_spec(zip_bytes=zipped, model_sha="0" * 64))
    status = await bad.wait_state("failed", "waiting_dataset")
    assert status["state"] == "failed" and "sha256 mismatch" in status["error"]
    assert not (tmp_path / "cache" / "base.safetensors").exists()

    cache = tmp_path / "volume"
    cache.mkdir()
    (cache / "base.safetensors").write_bytes(b"fake-base-model-weights " * 4096)
    before = len(stubs.hf_requests)
    good = await start_worker(replace(make_spec(zip_bytes=zipped)), cache_dir=cache)
    status = await good.wait_state("waiting_dataset", "failed")
    assert status["state"] == "waiting_dataset", status["error"]
    assert len(stubs.hf_requests) == before
    assert (good.work_dir / "models" / "base.safetensors").resolve() == (cache / "base.safetensors").resolve()
