"""``loraops sandbox``: the whole journey of design §2 against the local simulators, with a transcript.

No account and no network: the real bot (the production ``build_application``) talks to the Discord
simulator; photos come from a Cloudinary simulator; ``/train start`` rents a pod from the RunPod
simulator, whose pod runs the real worker with the sd-scripts stand-in and fetches its base model from a
local Hugging Face file server. Simulated people click and react as a studio would:

- **alice** (trainer) creates ``elena``, gathers, curates, captions, estimates, starts and confirms;
- **bob** and **dana** (reviewers) vote 👍/👎 on the sample grids and approve with ✅;

The studio's story, in two runs: the first trains the dataset as gathered with settings like the
studio's own (``sdxl-v4``); the stand-in plays what happened to them (``SDSTANDIN_SAMPLES=studio``: the
face is learned only when the training set shows it large), so the face alarm fires at the second
checkpoint, alice stops the run (the money saved is stated) and clicks **Retry with these changes**:
the face crops and exclusions are applied and a run of the face-weighted preset is quoted; she confirms,
it is recognised from early on, ranked, approved and delivered.
- **carol** (no role) looks at a checkpoint's samples again;
- **erin** (admin) looks at the budget.

Steps whose command is not in this build (the bot did not sync it) are skipped and listed in the result.
The run ends by writing ``transcript.html`` and ``transcript.json`` (see :mod:`sim.transcript`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.testdata import TESTDATA_FACES

if TYPE_CHECKING:
    from sim.discord import InteractionHandle, SimMessage, SimUser
    from sim.harness import BotHarness

ProgressFn = Callable[[str], object]

# The first run: the studio's own settings (the preset that learned the body and not the face).
PRESET = "sdxl-v4"
# Few steps, a checkpoint and a round of samples every 4 (a fifth of the run, as the presets do).
OVERRIDES = "steps=16 lr_warmup_steps=2 save_every_n_steps=4 sample_every_n_steps=4"
# The second run's preset, as the retry suggests it.
FACE_PRESET = "sdxl-face"
# Slow enough that the progress message is edited a few times, fast enough for a short run; the
# stand-in learns the face only from face crops or face-weighted images, as the real trainer does.
STANDIN_ENV = {"SDSTANDIN_STEP_SECONDS": "0.5", "SDSTANDIN_SAMPLES": "studio"}
# Gather and other long commands show "Listing…/Downloading…" lines before their final report.
# The bot's answer to an unexpected exception (bot/app.py's error policy).
_BOT_ERROR = re.compile(r"^Something went wrong")
_WORKING = re.compile(r"^[A-Z][a-z]+(?: [a-z]+)?… ")


class SandboxError(Exception):
    """The journey could not go on; the message says at which step and why."""


@dataclass
class Photo:
    """One photo seeded into the Cloudinary simulator."""

    name: str
    data: bytes
    role: str  # "person", "other person", "group", "duplicate"


@dataclass
class PhotoSet:
    """The photos of the journey and where they came from."""

    source: str
    photos: list[Photo]


@dataclass
class SandboxResult:
    """What the sandbox did and where it wrote it."""

    out_dir: Path
    transcript_html: Path
    transcript_json: Path
    entries: int
    files: int
    seconds: float
    photos_source: str
    job_id: int | None = None  # the run that was approved (the second)
    job_state: str | None = None
    first_job_id: int | None = None  # the run stopped by the face alarm
    delivered: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# -- photos ------------------------------------------------------------------------------------------------


def repo_root() -> Path:
    """The checkout this package lives in (``sim/`` sits at its top)."""
    return Path(__file__).resolve().parents[1]


def default_faces_dir() -> Path:
    """``../shared/testdata/faces`` beside the checkout (CI and developers keep it there)."""
    return TESTDATA_FACES


def photos_from_testdata(faces: Path) -> PhotoSet:
    """Five photos of one person, one of another, a group photo and a byte-identical duplicate."""
    person = sorted((faces / "obama").glob("*.jpg"))
    other = faces / "biden" / "biden_2.jpg"
    group = faces / "multi" / "obama_and_biden.jpg"
    if len(person) < 3 or not other.is_file() or not group.is_file():
        raise SandboxError(f"{faces} does not hold the expected photos (obama/, biden/, multi/)")
    photos = [Photo(p.name, p.read_bytes(), "person") for p in person]
    photos.append(Photo(other.name, other.read_bytes(), "other person"))
    photos.append(Photo(group.name, group.read_bytes(), "group"))
    photos.append(Photo("obama_1-copy.jpg", person[0].read_bytes(), "duplicate"))
    return PhotoSet(f"{faces} (obama/ ×{len(person)}, biden/biden_2.jpg, multi/obama_and_biden.jpg)", photos)


# Faces in insightface's t1.jpg (1280×886, six people), found once with the dlib detector: x0, y0, x1, y1.
_T1_FACES = ((1118, 283, 1226, 390), (67, 283, 175, 390), (724, 367, 832, 474))


def photos_from_insightface() -> PhotoSet:
    """Without the test photos: the images the insightface package ships.

    ``Tom_Hanks_54745.png`` (one aligned 112×112 face) becomes the person: five "photos" framed
    differently (scale, position, background, mirrored), so they are distinct pictures of one face.
    ``t1.jpg`` (six people) is the group photo, and one face cropped from it is the other person.
    """
    import importlib.util

    from PIL import Image, ImageOps

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise SandboxError("no test photos: neither ../shared/testdata/faces nor the insightface package")
    images = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    face = Image.open(images / "Tom_Hanks_54745.png").convert("RGB")
    group = Image.open(images / "t1.jpg").convert("RGB")

    def jpeg(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=92)
        return buffer.getvalue()

    framings = [  # canvas size, face size, face position, background colour, mirrored
        ((512, 512), 384, (64, 40), (200, 190, 180), False),
        ((512, 640), 300, (150, 120), (60, 80, 110), True),
        ((640, 480), 320, (40, 100), (120, 150, 90), False),
        ((480, 480), 420, (30, 30), (230, 230, 235), True),
        ((600, 600), 260, (300, 60), (90, 60, 60), False),
    ]
    photos: list[Photo] = []
    for index, (canvas_size, side, position, colour, mirrored) in enumerate(framings, 1):
        canvas = Image.new("RGB", canvas_size, colour)
        shown = face.resize((side, side), Image.Resampling.LANCZOS)
        canvas.paste(ImageOps.mirror(shown) if mirrored else shown, position)
        photos.append(Photo(f"portrait_{index}.jpg", jpeg(canvas), "person"))
    x0, y0, x1, y1 = _T1_FACES[0]
    margin = (x1 - x0) // 2
    crop = group.crop((x0 - margin, y0 - margin, min(x1 + margin, group.width), y1 + margin))
    photos.append(Photo("stranger.jpg", jpeg(crop.resize((crop.width * 2, crop.height * 2))), "other person"))
    photos.append(Photo("t1.jpg", (images / "t1.jpg").read_bytes(), "group"))
    photos.append(Photo("portrait_1-copy.jpg", photos[0].data, "duplicate"))
    return PhotoSet(
        f"{images} (Tom_Hanks_54745.png framed 5 ways as the person, a face cropped from t1.jpg as "
        "another person, t1.jpg as the group photo)",
        photos,
    )


def choose_photos(photos: Path | None) -> PhotoSet:
    """``photos`` when given, else ../shared/testdata/faces when present, else insightface's images."""
    if photos is not None:
        return photos_from_testdata(photos)
    faces = default_faces_dir()
    if (faces / "obama").is_dir():
        return photos_from_testdata(faces)
    return photos_from_insightface()


# -- the journey ---------------------------------------------------------------------------------------------


class Journey:
    """Drives the simulated people through the steps; knows how to wait for the bot's answers."""

    def __init__(self, h: BotHarness, progress: ProgressFn, started: float) -> None:
        self.h = h
        self.sim = h.sim
        self._progress = progress
        self._started = started
        self.skipped: list[str] = []
        assert h.trainer is not None and h.reviewer is not None and h.admin is not None
        self.alice: SimUser = h.trainer
        self.bob: SimUser = h.reviewer
        self.erin: SimUser = h.admin
        self.dana: SimUser = h.sim.add_member("dana", roles=["reviewer"])

    def say(self, text: str) -> None:
        """One progress line, mentions shown as names (``<@123>`` → ``@alice``)."""
        shown = re.sub(r"<@&?!?(\d+)>", lambda m: "@" + self._name(int(m[1])), text)
        self._progress(f"[{time.monotonic() - self._started:6.1f}s] {shown}")

    def _name(self, snowflake: int) -> str:
        user = self.sim.users.get(snowflake)
        if user is not None:
            return user.username
        role = self.sim.guild.roles.get(snowflake)
        return role.name if role is not None else str(snowflake)

    def has_command(self, path: str) -> bool:
        """Whether the bot synced ``/path`` ("dataset curate"), so the step can run."""
        parts = path.split()
        for command in self.sim.commands(self.sim.guild):
            if command.get("name") != parts[0]:
                continue
            if len(parts) == 1:
                return True
            return any(o.get("name") == parts[1] for o in command.get("options", []))
        return False

    def skip(self, step: str) -> None:
        self.skipped.append(step)
        self.say(f"skipped: {step}")

    async def slash(
        self,
        path: str,
        options: dict[str, Any],
        user: SimUser,
        *,
        within: float = 60,
        done: Callable[[SimMessage], bool] | None = None,
    ) -> tuple[InteractionHandle, SimMessage]:
        """Invoke ``/path`` and wait for its settled answer (not "thinking", not a progress line, and
        ``done`` when given)."""
        handle = await self.sim.invoke_slash(path, options, user=user)
        message = await self.settled(handle, within=within, done=done)
        return handle, message

    async def settled(
        self,
        handle: InteractionHandle,
        *,
        within: float = 60,
        done: Callable[[SimMessage], bool] | None = None,
    ) -> SimMessage:
        try:
            message = await handle.response(timeout=within)
            if message is None:
                raise SandboxError(f"{handle.interaction.command_name}: the bot opened a modal")

            def ready() -> SimMessage | None:
                current = self.sim.message(message.id)
                if _BOT_ERROR.match(current.content):
                    return current
                if current.loading or _WORKING.match(current.content):
                    return None
                if done is not None and not done(current):
                    return None
                return current

            answer: SimMessage = await self.sim.wait_until(ready, within)
        except TimeoutError:
            raise SandboxError(
                f"/{handle.interaction.command_name}: no answer from the bot within {within:.0f} s"
            ) from None
        if _BOT_ERROR.match(answer.content):
            raise SandboxError(f"/{handle.interaction.command_name}: the bot answered {answer.content!r}")
        return answer

    def bot_messages(self, predicate: Callable[[SimMessage], bool]) -> list[SimMessage]:
        return [
            m
            for m in self.sim.messages_in(self.sim.channel)
            if m.author.id == self.sim.bot_user.id and not m.ephemeral and predicate(m)
        ]

    async def wait_message(
        self, what: str, predicate: Callable[[SimMessage], bool], within: float = 120, *, after: int = 0
    ) -> SimMessage:
        """The first public bot message matching ``predicate`` (skipping the first ``after`` matches)."""
        try:
            found: list[SimMessage] = await self.sim.wait_until(
                lambda: self.bot_messages(predicate)[after:], within
            )
        except TimeoutError:
            raise SandboxError(f"waited {within:.0f} s for {what}; it never came") from None
        return found[0]

    async def click(self, message: SimMessage, custom_id: str, user: SimUser) -> InteractionHandle:
        handle = await self.sim.invoke_component(message.id, custom_id, user)
        await handle.ack(timeout=30)
        return handle


async def _create_and_gather(j: Journey, photos: PhotoSet) -> None:
    j.say("alice: /dataset create name:elena trigger:ohwx class:woman")
    _, created = await j.slash(
        "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, j.alice
    )
    if "Created dataset" not in created.content:
        raise SandboxError(f"/dataset create did not create the dataset: {created.content[:200]}")
    if j.has_command("dataset trigger"):
        # What a first name as trigger would have looked like: the warning and rare alternatives.
        j.say("alice: /dataset trigger name:elena word:elena (is a first name a good trigger?)")
        await j.slash("dataset trigger", {"name": "elena", "word": "elena"}, j.alice)

    cloud = j.h.cloudinary
    assert cloud is not None
    for index, photo in enumerate(photos.photos):
        public_id = f"elena/{Path(photo.name).stem}-{index}"
        cloud.add_asset(
            public_id, photo.data, asset_folder="elena", tags=["elena", photo.role.replace(" ", "-")]
        )
    j.say(f"seeded the Cloudinary simulator: {len(photos.photos)} photos in folder elena")
    j.say("alice: /dataset gather name:elena source:cloudinary folder:elena")
    _, gathered = await j.slash(
        "dataset gather", {"name": "elena", "source": "cloudinary", "folder": "elena"}, j.alice, within=120
    )
    j.say("bot: " + gathered.content.splitlines()[0][:160])
    if "added" not in gathered.content:
        raise SandboxError(f"/dataset gather added nothing: {gathered.content[:300]}")

    j.say("alice: /dataset show name:elena")
    await j.slash("dataset show", {"name": "elena"}, j.alice, within=60)


async def _curate(j: Journey) -> None:
    """alice looks at the report card and, like the studio, trains the photos as gathered."""
    if not j.has_command("dataset curate"):
        j.skip("/dataset curate (the command is not in this build yet)")
        return
    j.say("alice: /dataset curate name:elena (faces, sharpness, identity)")
    _, card = await j.slash(
        "dataset curate", {"name": "elena"}, j.alice, within=300, done=lambda m: "checked" in m.content
    )
    j.say("bot: " + card.content.splitlines()[0][:160])
    j.say("alice trains the photos as gathered, as the studio did (the suggestions wait for the retry)")


async def _caption_and_estimate(j: Journey) -> None:
    j.say("alice: /dataset caption name:elena")
    await j.slash("dataset caption", {"name": "elena"}, j.alice, within=60)
    j.say(f"alice: /train estimate dataset:elena preset:{PRESET} overrides:{OVERRIDES}")
    _, estimate = await j.slash(
        "train estimate", {"dataset": "elena", "preset": PRESET, "overrides": OVERRIDES}, j.alice, within=60
    )
    j.say("bot: " + " · ".join(estimate.content.splitlines()[:2])[:160])


def _is_grid_row(message: SimMessage) -> bool:
    return bool(message.attachments) and message.content.startswith("**Checkpoint step")


async def _vote(j: Journey, row: SimMessage, index: int) -> None:
    """Reviewers vote on a grid row as it arrives: bob likes every row, dana dislikes the first one."""
    await j.sim.react(row.id, "👍", j.bob)
    await j.sim.react(row.id, "👎" if index == 0 else "👍", j.dana)
    j.say(f"bob 👍 and dana {'👎' if index == 0 else '👍'} on: {row.content.splitlines()[0][:110]}")


async def _start(j: Journey) -> int:
    j.say(f"alice: /train start dataset:elena preset:{PRESET} overrides:{OVERRIDES}")
    _, quote = await j.slash(
        "train start", {"dataset": "elena", "preset": PRESET, "overrides": OVERRIDES}, j.alice, within=60
    )
    return await _confirm(j, quote)


async def _confirm(j: Journey, quote: SimMessage) -> int:
    from sim.harness import confirm_button, quoted_job_id  # the bot's modules load with the journey

    job_id = quoted_job_id(quote)
    if job_id is None:
        raise SandboxError(f"no job was quoted: {quote.content[:300]}")
    j.say(f"alice clicks [Confirm] on job #{job_id}")
    await j.click(quote, confirm_button(job_id), j.alice)
    return job_id


async def _follow(j: Journey, job_id: int, *, vote: bool) -> SimMessage:
    """Watch a run until its summary: progress lines, grid rows (voted on when ``vote``), the alarm."""
    progress = await j.wait_message(
        "the progress message", lambda m: m.content.startswith(f"Job #{job_id} ·"), within=60
    )
    j.say("bot posts the progress message; it is edited in place while the pod trains")
    seen: set[str] = set()
    voted: set[int] = set()
    deadline = time.monotonic() + 600
    while True:
        for line in j.sim.message(progress.id).content.splitlines()[:1]:
            if line not in seen:
                seen.add(line)
                j.say("  progress: " + line[:150])
        for row in j.bot_messages(lambda m: _is_grid_row(m) and f"job{job_id}-" in _first_file(m)):
            if row.id not in voted:
                voted.add(row.id)
                if vote:
                    await _vote(j, row, len(voted) - 1)
                else:
                    j.say("  row: " + row.content.splitlines()[0][:150])
        alarm = _alarm_of(j, job_id)
        if alarm is not None and not vote:
            return alarm
        ended = j.bot_messages(lambda m: f"training job #{job_id} " in m.content)
        if ended:
            break
        if time.monotonic() > deadline:
            raise SandboxError(f"job #{job_id} did not finish within 10 minutes")
        await asyncio.sleep(0.3)
    j.say("bot: " + ended[0].content.splitlines()[0][:160])
    return ended[0]


def _first_file(message: SimMessage) -> str:
    return message.attachments[0].filename if message.attachments else ""


def _alarm_of(j: Journey, job_id: int) -> SimMessage | None:
    found = j.bot_messages(lambda m: f"job #{job_id}: **the face is not being learned.**" in m.content)
    return found[0] if found else None


async def _first_run(j: Journey) -> tuple[int, SimMessage]:
    """The studio's run: the alarm at the second checkpoint; alice stops it and retries with the changes."""
    job_id = await _start(j)
    alarm = await _follow(j, job_id, vote=False)
    if _alarm_of(j, job_id) is None:
        raise SandboxError(f"job #{job_id} ended without the face alarm: {alarm.content[:200]}")
    j.say("bot ALARM: " + alarm.content.splitlines()[0][:200])
    j.say(f"alice clicks [Stop now] on job #{job_id}")
    await j.click(alarm, f"loraops:alarm:stop:{job_id}", j.alice)
    stopped = await j.wait_message("the stop", lambda m: m.content.startswith(f"🛑 Job #{job_id} stopped"))
    j.say("bot: " + stopped.content[:200])
    summary = await j.wait_message(
        "the first run's summary", lambda m: f"training job #{job_id} " in m.content, within=120
    )
    j.say("bot: " + summary.content.splitlines()[0][:160])
    j.say(f"alice clicks [Retry with these changes] on the alarm of job #{job_id}")
    handle = await j.sim.invoke_component(alarm.id, f"loraops:alarm:retry:{job_id}", j.alice)
    quote = await j.settled(handle, within=300, done=lambda m: "waiting for confirmation" in m.content)
    j.say("bot: " + quote.content.splitlines()[0][:200])
    return job_id, quote


async def _second_run(j: Journey, quote: SimMessage) -> tuple[int, SimMessage]:
    job_id = await _confirm(j, quote)
    summary = await _follow(j, job_id, vote=True)
    if _alarm_of(j, job_id) is not None:
        raise SandboxError(f"the face-weighted run #{job_id} raised the face alarm too")
    return job_id, summary


async def _review(j: Journey, job_id: int) -> None:
    """The summary, late grid rows, ✅ approval and delivery (when the review cog is in this build)."""

    def summary(m: SimMessage) -> bool:
        return f"training job #{job_id} " in m.content and "✅ on this message" in m.content

    try:
        found = await j.wait_message("the summary", summary, within=30 if j.bot_messages(_is_grid_row) else 5)
    except SandboxError:
        j.skip("grid rows, votes, summary and ✅ approval (the review cog is not in this build yet)")
        return
    rows = j.bot_messages(lambda m: _is_grid_row(m) and _first_file(m).startswith(f"job{job_id}-"))
    for index, row in enumerate(rows):
        if j.bob.id not in row.reaction_users("👍"):  # posted after the training loop's last look
            await _vote(j, row, index)
    j.say("bot posts the summary: " + found.content.splitlines()[-1][:150])
    await asyncio.sleep(0.5)
    j.say("bob approves the best checkpoint with ✅ on the summary")
    await j.sim.react(found.id, "✅", j.bob)
    loras = j.h.settings.comfyui_loras_dir if j.h.settings else None

    def delivered() -> bool:
        return bool(loras and loras.is_dir() and any(loras.glob("*.safetensors")))

    try:
        await asyncio.wait_for(_until(delivered), 120)
    except TimeoutError:
        raise SandboxError("✅ approval did not deliver a checkpoint to the ComfyUI loras folder") from None
    assert loras is not None
    j.say(f"delivered to {loras}: {', '.join(p.name for p in sorted(loras.glob('*.safetensors')))}")
    # The bot announces the delivery; give it a moment to post before the transcript is written.
    with contextlib.suppress(SandboxError):
        await j.wait_message("the delivery note", lambda m: "deliver" in m.content.lower(), within=10)
    await asyncio.sleep(1.0)


async def _samples_and_promote(j: Journey, job_id: int) -> None:
    """Anyone may look at a checkpoint's samples again; a trainer may promote another checkpoint."""
    assert j.h.visitor is not None
    if j.has_command("train samples"):
        j.say(f"carol: /train samples job:{job_id} step:8")
        await j.slash("train samples", {"job": job_id, "step": 8}, j.h.visitor, within=60)
    else:
        j.skip("/train samples (the command is not in this build yet)")
    if j.has_command("train promote"):
        approved = j.bot_messages(lambda m: f" of job #{job_id} approved by" in m.content)
        found = re.search(r"Checkpoint step (\d+) of job", approved[0].content) if approved else None
        step = 12 if found is None or found[1] != "12" else 8  # another checkpoint than the approved one
        j.say(f"alice: /train promote job:{job_id} step:{step} (a second LoRA to compare in ComfyUI)")
        _, promoted = await j.slash("train promote", {"job": job_id, "step": step}, j.alice, within=60)
        j.say("bot: " + promoted.content.splitlines()[0][:160])
    else:
        j.skip("/train promote (the command is not in this build yet)")


async def _until(check: Callable[[], bool]) -> None:
    """Poll a condition no Discord request signals (a file appearing on disk)."""
    for _ in itertools.count():
        if check():
            return
        await asyncio.sleep(0.1)


async def _budget(j: Journey) -> None:
    j.say("erin: /budget show")
    _, shown = await j.slash("budget show", {}, j.erin)
    j.say("bot: " + shown.content.splitlines()[0][:160])


async def _money(j: Journey) -> None:
    """What RunPod billed against the bot's ledger: they must agree to the cent, GPU and disks."""
    from bot.training.money import usd
    from sim.meter import ledger_of, mismatch, pods_meter

    runpod = j.h.runpod
    if runpod is None:
        return
    try:
        await runpod.wait_for(lambda: not runpod.live_pods(), within=30)
    except TimeoutError:
        raise SandboxError("a RunPod pod was still billing after the journey") from None
    ledger, meter = await ledger_of(j.h.bot_app.services.sessions), pods_meter(runpod)
    problem = mismatch(ledger, meter)
    if problem is not None:
        raise SandboxError(f"the ledger disagrees with RunPod's meter: {problem}")
    j.say(
        f"money: RunPod billed {usd(meter.total)} (GPU {usd(meter.compute)}, disks "
        f"{usd(meter.storage)}) and the ledger says the same; no pod is left running"
    )


def _prepare(out_dir: Path) -> tuple[Path, Path]:
    """The output folder and its ComfyUI ``loras`` folder, created."""
    out_dir = out_dir.resolve()
    loras = out_dir / "comfyui" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    return out_dir, loras


async def run_sandbox(
    out_dir: Path, *, photos: Path | None = None, progress: ProgressFn = print
) -> SandboxResult:
    """Run the whole journey against the simulators and write the transcript into ``out_dir``.

    ``photos``: a folder laid out like ``testdata/faces`` (obama/, biden/, multi/); by default
    ../shared/testdata/faces beside the checkout, else the images the insightface package ships.
    Raises :class:`SandboxError` with the step and the cause when the journey cannot go on.
    """
    from sim.harness import BotHarness
    from sim.transcript import write_transcript

    started = time.monotonic()
    chosen = choose_photos(photos)
    out_dir, loras = _prepare(out_dir)
    progress(f"photos: {chosen.source}")
    job_id: int | None = None
    first_job_id: int | None = None
    job_state: str | None = None
    with tempfile.TemporaryDirectory(prefix="loraops-sandbox-") as scratch:
        harness = BotHarness(
            Path(scratch) / "bot",
            with_cloudinary=True,
            with_training=True,
            standin_env=dict(STANDIN_ENV),
            settings_overrides={"comfyui_loras_dir": loras, "progress_edit_interval_s": 1.0},
        )
        progress("starting the simulators (Discord, Cloudinary, RunPod, Hugging Face) and the bot…")
        async with harness as h:
            journey = Journey(h, progress, started)
            failure: SandboxError | None = None
            try:
                await _create_and_gather(journey, chosen)
                await _curate(journey)
                await _caption_and_estimate(journey)
                if journey.has_command("train start"):
                    first_job_id, retry_quote = await _first_run(journey)
                    job_id, _ = await _second_run(journey, retry_quote)
                    training = h.bot_app.services.training
                    if training is not None:
                        job_state = (await training.service.get(job_id)).state
                    if job_state != "succeeded":
                        raise SandboxError(f"training job #{job_id} ended {job_state}, not succeeded")
                    await _review(journey, job_id)
                    await _samples_and_promote(journey, job_id)
                await _budget(journey)
                await _money(journey)
            except SandboxError as exc:
                failure = exc
            journey.say("writing the transcript")
            written = write_transcript(h.sim, out_dir)
            skipped = journey.skipped
            if failure is not None:
                raise SandboxError(f"{failure} (transcript so far: {written.html})")
    return SandboxResult(
        out_dir=out_dir,
        transcript_html=written.html,
        transcript_json=written.json,
        entries=written.entries,
        files=written.files,
        seconds=time.monotonic() - started,
        photos_source=chosen.source,
        job_id=job_id,
        job_state=job_state,
        first_job_id=first_job_id,
        delivered=sorted(loras.glob("*.safetensors")),
        skipped=skipped,
    )


def run(out_dir: Path, *, photos: Path | None = None, progress: ProgressFn = print) -> SandboxResult:
    """Synchronous entry for the command line."""
    return asyncio.run(run_sandbox(out_dir, photos=photos, progress=progress))


__all__ = [
    "Photo",
    "PhotoSet",
    "SandboxError",
    "SandboxResult",
    "choose_photos",
    "run",
    "run_sandbox",
]
