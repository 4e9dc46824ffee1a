"""Hostile values at the unit level: showing user text, redacting secrets, budgets, numeric IP hosts,
worker tokens and the override allow-list. The same inputs go through Discord in
tests/e2e/test_hostile_inputs.py."""

from __future__ import annotations

import io
import logging
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.clients.fetch import FetchError, SafeFetcher, numeric_ipv4
from bot.config import Settings
from bot.errors import InvalidInputError
from bot.guilds import check_budget, parse_usd
from bot.log import RedactingFormatter, setup_logging
from bot.text import plain, quote_inline, visible
from bot.training import tokens
from bot.training.overrides import ALLOWED, allowed_for
from bot.training.presets import OverrideError, apply_overrides, load_preset, parse_override_text
from worker.redact import redact

# -- showing user text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("**bold**", r"\*\*bold\*\*"),
        ("[click](https://evil.example)", r"\[click\](https\://evil.example)"),
        ("||spoiler|| ~~gone~~ __under__", r"\|\|spoiler\|\| \~\~gone\~\~ \_\_under\_\_"),
        ("# Heading", r"\# Heading"),
        ("-# small print", r"\-# small print"),
        ("> quoted", r"\> quoted"),
        ("1. listed", r"1\. listed"),
        ("`code`", r"\`code\`"),
        ("a\u202eevil", r"a\[U+202E\]evil"),  # right-to-left override: shown, not obeyed
        ("zero\u200bwidth\u2066iso", r"zero\[U+200B\]width\[U+2066\]iso"),
        ("nul\x00esc\x1b[31mred", r"nulesc\[31mred"),  # controls removed
        ("two\nlines", "two lines"),
        ("version 1.5 (final) - ok", "version 1.5 (final) - ok"),  # ordinary text stays readable
    ],
)
def test_plain_neutralises_markdown_links_controls_and_bidi(typed: str, shown: str) -> None:
    assert plain(typed) == shown


def test_mentions_cannot_ping_or_render() -> None:
    shown = plain("hi @everyone and @here and <@123> and <@&456>")
    assert "@everyone" not in shown and "@here" not in shown
    assert "<@123>" not in shown and "<@&456>" not in shown
    assert "\u200b" in shown  # the mention is broken by a zero-width space, it still reads the same


def test_lengths_are_bounded_before_escaping() -> None:
    assert plain("x" * 5000, 100) == "x" * 99 + "…"
    assert len(quote_inline("y" * 5000, 40)) == 42  # 40 characters and two backticks
    assert visible("z" * 10, 5) == "zzzz…"


def test_quote_inline_cannot_be_closed_early() -> None:
    shown = quote_inline("a`**b**`c")
    assert shown.startswith("`") and shown.endswith("`") and shown.count("`") == 2
    assert quote_inline("") == "(empty)" and quote_inline("\u200b") != "``"


# -- secrets by shape ----------------------------------------------------------------------------------

WORKER_TOKEN = tokens.derive_token(b"k" * 32, 7, "abc")
SHAPED = [
    f"Authorization: Bearer {WORKER_TOKEN}",
    f"headers={{'Authorization': 'Bearer {WORKER_TOKEN}'}}",
    "GET https://api.runpod.io/graphql?api_key=RUNPODKEYABCDEF123456 200",
    "cloudinary://123456789012345:sIm-SeCrEt-value@loraops-sim",
    "HF_TOKEN=hf_ThisIsAHuggingFaceToken0123456789",
    '{"LORAOPS_WORKER_TOKEN": "' + WORKER_TOKEN + '"}',
    "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GdIsTn.aVeryLongDiscordTokenTail0123456",
    "legacy token Zq3x_8kP2mW9vR4tY7uB1nC6dF0gH5jL2sA9eQ4wE7r",  # secrets.token_urlsafe(32) shape
]


@pytest.mark.parametrize("line", SHAPED)
def test_secret_shapes_are_redacted_without_knowing_the_value(line: str) -> None:
    clean = redact(line)
    assert "***" in clean
    for secret in (WORKER_TOKEN, "RUNPODKEYABCDEF123456", "sIm-SeCrEt-value", "hf_ThisIsAHuggingFace"):
        assert secret not in clean
    assert (
        "aVeryLongDiscordTokenTail" not in clean
        and "Zq3x_8kP2mW9vR4tY7uB1nC6dF0gH5jL2sA9eQ4wE7r" not in clean
    )


def test_ordinary_log_text_and_digests_are_kept() -> None:
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d0a08f6e3b2c1"
    for line in (
        f"blob {digest} stored",
        "the bot restarted; basic checks passed",
        "max_token_length = 225, pod abc123xyz running",
    ):
        assert redact(line) == line


async def test_debug_log_of_a_real_sqlite_query_holds_no_parameter(
    tmp_path: Path, root_logging: None
) -> None:
    """aiosqlite logs each call with its SQL parameters at DEBUG: held at WARNING, then redacted anyway."""
    import aiosqlite

    out = io.StringIO()
    setup_logging("DEBUG", ["configured-secret-value"], stream=out)
    token = tokens.derive_token(b"another key", 3, "n0nce")
    async with aiosqlite.connect(tmp_path / "t.db") as db:
        await db.execute("create table t (token text)")
        await db.execute("insert into t values (?)", (token,))
        await db.commit()
    logging.getLogger("loraops.test").debug("calling the worker with Bearer %s", token)
    logging.getLogger("loraops.test").info("the key is configured-secret-value")
    try:
        raise RuntimeError(f"worker refused {token}")
    except RuntimeError:
        logging.getLogger("loraops.test").exception("boom")  # the traceback text is redacted too
    text = out.getvalue()
    assert "calling the worker with Bearer ***" in text and "the key is ***" in text
    assert token not in text and "configured-secret-value" not in text
    assert "RuntimeError: worker refused ***" in text
    assert logging.getLogger("aiosqlite").level == logging.WARNING


def test_formatter_redacts_a_record_built_around_it() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "env %s", ({"HF_TOKEN": "hf_" + "a1" * 15},), None
    )
    assert "hf_a1" not in RedactingFormatter().format(record)


# -- worker tokens ---------------------------------------------------------------------------------------


def test_worker_tokens_are_derived_from_a_key_in_the_environment() -> None:
    settings = Settings(_env_file=None, worker_token_key=SecretStr("key-one"))  # type: ignore[call-arg]
    first = tokens.worker_token(settings, 5, "nonce-a")
    assert first is not None and first.startswith("lwt_") and len(first) == 47
    assert tokens.worker_token(settings, 5, "nonce-a") == first  # the same after a restart
    assert tokens.worker_token(settings, 6, "nonce-a") != first  # per job
    assert tokens.worker_token(settings, 5, "nonce-b") != first  # a reused job id gets a new token
    other = Settings(_env_file=None, worker_token_key=SecretStr("key-two"))  # type: ignore[call-arg]
    assert tokens.worker_token(other, 5, "nonce-a") != first
    assert tokens.worker_token(settings, 5, None) is None  # a job from before: no token at all
    fallback = Settings(_env_file=None, runpod_api_key=SecretStr("rp-key"))  # type: ignore[call-arg]
    assert tokens.worker_token(fallback, 5, "nonce-a") == tokens.derive_token(b"rp-key", 5, "nonce-a")
    with pytest.raises(tokens.NoTokenKeyError):
        tokens.worker_token(Settings(_env_file=None), 5, "nonce-a")  # type: ignore[call-arg]
    assert "key-one" in settings.secret_values()


# -- budgets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("0.004", "of $0.00 (after rounding to the cent) is too small"),
        ("0", "too small"),
        ("-2", "can't be negative"),
        ("- $3", "can't be negative"),
        ("nan", "`nan` is not an amount in dollars"),
        ("sNaN", "is not an amount"),
        ("Infinity", "is not an amount"),
        ("1e3", "is not an amount"),
        ("10000.005", "$10,000.01 is more than allowed"),
        ("99999999999999", "is more than allowed"),
        ("١٢", "is not an amount"),  # Arabic-Indic digits: Decimal reads them, people do not mean them
        ("\u202e5", "`[U+202E]5` is not an amount"),
    ],
)
def test_budgets_are_refused_after_rounding_with_the_range(typed: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_usd(typed)
    assert message in str(caught.value)
    assert "between $0.01 and $10,000.00" in str(caught.value)


def test_budgets_are_rounded_to_the_cent() -> None:
    assert parse_usd("0.005") == Decimal("0.01")
    assert parse_usd(" $ 2.5 USD") == Decimal("2.50")
    assert parse_usd("10000.004") == Decimal("10000.00")
    assert check_budget(Decimal("3.456")) == Decimal("3.46")
    for bad in (Decimal("NaN"), Decimal("-Infinity"), Decimal("0.001"), Decimal("1e40")):
        with pytest.raises(InvalidInputError):
            check_budget(bad)


def test_settings_budgets_follow_the_same_rule() -> None:
    from bot.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="after rounding to the cent"):
        load_settings(_env_file=None, default_job_budget_usd="0.004")
    assert load_settings(_env_file=None, monthly_budget_usd="49.999").monthly_budget_usd == Decimal("50.00")


# -- numeric IP hosts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("0x7f000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("3232235777", "192.168.1.1"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_numeric_hosts_are_read_as_the_c_resolver_reads_them(host: str, address: str) -> None:
    assert str(numeric_ipv4(host)) == address


def test_ordinary_hosts_are_not_numeric() -> None:
    for host in ("example.com", "93.184.216.34", "08.1.1.1", "1.2.3.4.5", "cdn-1.example"):
        assert numeric_ipv4(host) is None


async def test_numeric_hosts_are_refused_with_the_policy_reason() -> None:
    from yarl import URL

    fetcher = SafeFetcher()
    try:
        for url, reason in [
            ("http://0x7f000001/a.jpg", "refused: 0x7f000001 is 127.0.0.1, a loopback address"),
            ("http://2130706433/a.jpg", "refused: 2130706433 is 127.0.0.1, a loopback address"),
            ("http://0300.0250.0001.0001/", "is 192.168.1.1, a private address"),
            ("http://0xa9fea9fe/latest/", "is 169.254.169.254, a link-local address"),
            ("http://0x08080808/", "is the IPv4 address 8.8.8.8 written in a numeric form; use 8.8.8.8"),
        ]:
            with pytest.raises(FetchError) as caught:
                await fetcher.check_url(URL(url))
            assert reason in str(caught.value)
    finally:
        await fetcher.close()


# -- the override allow-list -----------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["sd15-local", "sdxl-face", "flux-dev-face"])
@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("network_weights=/etc/passwd", "`network_weights` is refused: paths, model files"),
        ("dataset_config=/etc/passwd", "`dataset_config` is refused: paths"),
        ('network_args=["conv_dim=1e9","../../x"]', "`network_args` is refused: free-form"),
        ("output_dir=../../etc", "`output_dir` is refused: paths"),
        ("output_name=../../x", "`output_name` is refused: paths"),
        ("logging_dir=/tmp/x", "`logging_dir` is refused: paths"),
        ("sample_prompts=/etc/passwd", "`sample_prompts` is refused: paths"),
        ("pretrained_model_name_or_path=/etc/passwd", "`pretrained_model_name_or_path` is refused"),
        ("resume=/tmp/state", "`resume` is refused: paths"),
        ("log_with=wandb", "would send the run or a credential to an outside service"),
        ("wandb_api_key=abc", "would send the run or a credential"),
        ("network_module=evil.module", "set by the bot for every run"),
        ("lr_scheduler_type=os.system", "free-form"),
        ("metadata_title=x", "set by the bot"),
        ("learning_rate=nan", "learning_rate = nan: must be a finite number"),
        ("lr=inf", "learning_rate = inf: must be a finite number"),
        ("lr=-inf", "must be a finite number"),
        ("steps=1e400", "expected a whole number"),
        ("rank=1" + "0" * 400, "network_dim"),
        ("face.background=2", "face.background = 2.0 is above the maximum 1"),
        ("face.margin=-1", "face.margin = -1.0 is below the minimum 0"),
        ("preset.min_vram_gb=-5", "preset.min_vram_gb = -5 is below the minimum"),
        ("preset.min_vram_gb=4096", "above the maximum 192"),
        ("preset.early_stop_patience=-1", "below the minimum 0"),
        ("preset.name=evil", "`preset.name` cannot be changed from chat"),
        ("sampling.steps=100000", "sampling.steps = 100000 is above the maximum 150"),
        ("sampling.negative=a\u202eb", "line breaks and control characters are not allowed"),
        ("optimizer_args=[\"foo=__import__('os')\"]", "`foo` is not an optimizer option"),
        ('optimizer_args=["weight_decay=nan"]', "weight_decay = `nan` must be finite numbers"),
        ("image_dir=/", "`image_dir` is refused: paths"),
        ("optimizer_type=**AdamW**", "optimizer_type: expected a name (letters, digits and . _ + -)"),
        ("lr_scheduler=[x](https://evil.example)", "lr_scheduler: expected a name"),
        ('"sampling.negative=blurry --n 1"', "sampling.negative: ' --' would start another option"),
        ("face_crops.image_dir=/", "`face_crops.image_dir` is refused: paths"),
    ],
)
def test_each_refused_override_names_the_key_and_why(preset: str, typed: str, expected: str) -> None:
    with pytest.raises(OverrideError) as caught:
        apply_overrides(load_preset(preset), parse_override_text(typed))
    assert expected in str(caught.value), str(caught.value)


def test_every_problem_is_listed_in_one_refusal() -> None:
    typed = "network_weights=/etc/passwd lr=nan face.background=2 stepz=8"
    with pytest.raises(OverrideError) as caught:
        apply_overrides(load_preset("sdxl-face"), parse_override_text(typed))
    assert len(caught.value.problems) == 5  # four keys, then what may be set instead
    assert caught.value.problems[-1].startswith("settings you can change for sdxl: ")
    assert "unknown key `stepz`" in str(caught.value) and "(did you mean steps?)" in str(caught.value)


def test_family_specific_settings() -> None:
    with pytest.raises(OverrideError, match="does not apply to sdxl presets"):
        apply_overrides(load_preset("sdxl-face"), {"guidance_scale": "3.5"})
    with pytest.raises(OverrideError, match="does not apply to flux presets"):
        apply_overrides(load_preset("flux-dev-face"), {"clip_skip": "2"})
    _, applied = apply_overrides(
        load_preset("flux-dev-face"), {"guidance_scale": "1.0", "sampling.guidance": "4"}
    )
    assert applied == {"guidance_scale": 1.0, "sampling.guidance": 4.0}
    assert "guidance_scale" in allowed_for("flux") and "guidance_scale" not in allowed_for("sd15")
    assert all(spec.families for spec in ALLOWED.values())


def test_good_overrides_still_apply() -> None:
    typed = (
        'rank=16, lr=1e-4 "sampling.negative=blurry, dark" batch=2 face.background=0.2 preset.min_vram_gb=48'
    )
    preset, applied = apply_overrides(load_preset("sdxl-face"), parse_override_text(typed))
    assert applied == {
        "network_dim": 16,
        "learning_rate": 1e-4,
        "sampling.negative": "blurry, dark",
        "batch_size": 2,
        "face.background": 0.2,
        "preset.min_vram_gb": 48,
    }
    assert preset.dataset["batch_size"] == 2 and preset.min_vram_gb == 48  # batch lands where it wins


def test_the_commands_check_lists_schema_ranges_before_deferring() -> None:
    """What /train and /dataset export check before answering: the allow-list, then each value against
    the schema's own rules for its key, so common mistakes never wait for rendering."""
    from bot.training.presets import check_overrides

    with pytest.raises(OverrideError) as caught:
        check_overrides("sdxl-face", "rank=0 steps=1e7 batch=100000 mixed_precision=fp32")
    assert caught.value.problems == [
        "network_dim = 0 is below the minimum 1",
        "max_train_steps = 10000000 is above the maximum 100000",
        "batch_size = 100000 is above the maximum 64",
        "mixed_precision = `fp32`: must be one of 'no', 'fp16', 'bf16'",
    ]
    assert check_overrides("sdxl-face", "rank=16 lr=1e-4") == {"rank": "16", "lr": "1e-4"}
