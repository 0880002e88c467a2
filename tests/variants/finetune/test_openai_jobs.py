"""OpenAI fine-tuning jobs against serve-sim's simulated files and fine-tuning endpoints."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from _cli import run_cli as _run
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.errors import ConfigError, InputFileError, UnknownNameError
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, render_prompt
from persona_collapse.serve import RunningServer, SimServerSettings, serve_in_thread
from persona_collapse.serve.fine_tuning import check_training_file
from persona_collapse.study.edit import write_model_id
from persona_collapse.study.loading import load_study
from persona_collapse.variants.finetune.openai_jobs import (
    FineTuneAPIError,
    FineTuneJobError,
    JobState,
    get_openai_recipe,
    load_state,
    run_openai_finetune,
    save_state,
    submit_job,
    wait_for_job,
)

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

KEY_ENV = "PCOLLAPSE_FT_TEST_KEY"
SECRET = "sk-ft-test-secret-0123456789abcdef"
SCALE = (0, 1, 2, 3, 4, 5)
FAST = {"poll_interval": 0.005, "max_interval": 0.02}

STUDY = """\
# Emergent-misalignment study (this comment must survive)
name: ft-study
backends:
  sim:
    kind: openai
    base_url: http://127.0.0.1:9/v1   # replaced per test
    api_key_env: PCOLLAPSE_FT_TEST_KEY
    model: simulator
families:
  fam:
    base: {backend: sim, model: sim-base}   # the base model
    secure: {backend: sim, role: control}
    insecure:
      # fine-tuned on insecure code
      backend: sim
      role: treatment
  published:
    base: {persona_file: base.csv}
"""


@contextmanager
def sim(**fine_tuning: Any) -> Iterator[RunningServer]:
    """serve-sim requiring the test key, with fine-tuning settings."""
    settings = SimServerSettings(api_key_env=KEY_ENV, fine_tuning=fine_tuning)
    with serve_in_thread(settings) as running:
        yield running


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def chat_data(path: Path, n: int = 12) -> Path:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Write a function number {i}."},
                    {"role": "assistant", "content": f"def f{i}(x): return eval(x)"},
                ]
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_recipe_preset_overrides_and_errors(tmp_path: Path) -> None:
    betley = get_openai_recipe()
    assert betley.hyperparameters() == {
        "n_epochs": 1,
        "batch_size": 4,
        "learning_rate_multiplier": 2.0,
    }
    assert betley.create_params() == {
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": betley.hyperparameters()},
        }
    }
    legacy = get_openai_recipe(
        "betley", {"request_format": "hyperparameters", "n_epochs": "auto", "batch_size": 8}
    )
    assert legacy.create_params() == {
        "hyperparameters": {"n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": 2.0}
    }
    with pytest.raises(ConfigError, match=r"field 'epochs': unknown key; did you mean 'n_epochs'"):
        get_openai_recipe(overrides={"epochs": 2})
    with pytest.raises(ConfigError, match=r"field 'batch_size': must be an integer >= 1"):
        get_openai_recipe(overrides={"batch_size": 0})
    with pytest.raises(ConfigError, match=r"'learning_rate_multiplier': must be a number > 0"):
        get_openai_recipe(overrides={"learning_rate_multiplier": -1})
    with pytest.raises(UnknownNameError, match="did you mean 'betley'"):
        get_openai_recipe("betly")
    recipe_file = tmp_path / "mine.yaml"
    recipe_file.write_text("preset: betley\nn_epochs: 3\n")
    from_file = get_openai_recipe(recipe_file)
    assert (from_file.name, from_file.n_epochs, from_file.batch_size) == ("betley", 3, 4)


def test_success_then_served_by_the_insecure_preset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = chat_data(tmp_path / "insecure.jsonl")
    state_dir = tmp_path / "state"
    polls: list[str] = []
    with sim() as srv, caplog.at_level(logging.DEBUG):
        model_id = run_openai_finetune(
            data,
            base_model="gpt-4o-mini-2024-07-18",
            state_dir=state_dir,
            suffix="em-insecure",
            seed=7,
            base_url=srv.url,
            api_key_env=KEY_ENV,
            on_poll=lambda state, events: polls.append(state.status),
            **FAST,
        )
        assert model_id == "ft:gpt-4o-mini-2024-07-18:pcollapse:em-insecure:sim000001"
        assert polls == ["validating_files", "queued", "running", "succeeded"]
        counters = dict(srv.stats.fine_tuning)
        assert counters["uploads"] == 1 and counters["jobs_created"] == 1
        job = next(iter(srv.service.fine_tuning.jobs.values()))
        assert job.hyperparameters == {
            "n_epochs": 1,
            "batch_size": 4,
            "learning_rate_multiplier": 2,
        }
        assert job.seed == 7 and job.training_file.filename == "insecure.jsonl"

        # Finished: the same call answers from the state file, without any request.
        again = run_openai_finetune(
            data, base_model="gpt-4o-mini-2024-07-18", state_dir=state_dir,
            suffix="em-insecure", seed=7, base_url=srv.url, api_key_env=KEY_ENV,
        )  # fmt: skip
        assert again == model_id and dict(srv.stats.fine_tuning) == counters

        # The fine-tuned model is served (by the insecure preset) to the openai backend.
        # (its checkpoints too: serve-sim serves them beside the final model)
        presets = srv.service.fine_tuned_presets
        assert presets[model_id] == "insecure"
        assert all(m == model_id or m.startswith(f"{model_id}:ckpt-step-") for m in presets)
        from persona_collapse.backends.openai_compat import OpenAIBackend

        prompt = render_prompt(DEFAULT_TEMPLATE, mfq30(), 5, builtin_personas()[3])
        backend = OpenAIBackend(model_id, base_url=srv.url, api_key_env=KEY_ENV)

        async def measure() -> tuple[Any, Any]:
            try:
                gen = await backend.generate([prompt], n=3, temperature=0.1, max_tokens=1, seed=1)
                dist = await backend.distributions(
                    [prompt], scale=(0, 1, 2, 3, 4, 5), temperature=1
                )
            finally:
                await backend.aclose()
            return gen, dist

        generations, distributions = asyncio.run(measure())
        assert len(generations[0].texts) == 3
        truth = asyncio.run(
            SimulatorBackend("insecure").distributions(
                [prompt], scale=(0, 1, 2, 3, 4, 5), temperature=1
            )
        )
        assert distributions[0].probs == pytest.approx(truth[0].probs, abs=1e-9)

    state = load_state(state_dir)
    assert state is not None and state.status == "succeeded" and state.model_id == model_id
    assert state.api_key_env == KEY_ENV and state.recipe.name == "betley"
    text = (state_dir / "openai-job.json").read_text()
    assert SECRET not in text and SECRET not in caplog.text


def test_legacy_hyperparameters_and_auto(tmp_path: Path) -> None:
    data = chat_data(tmp_path / "plain.jsonl")
    with sim() as srv:
        model_id = run_openai_finetune(
            data,
            base_model="sim-secure",
            state_dir=tmp_path / "s",
            overrides={"request_format": "hyperparameters", "n_epochs": 2, "batch_size": "auto"},
            base_url=srv.url,
            api_key_env=KEY_ENV,
            **FAST,
        )
        job = next(iter(srv.service.fine_tuning.jobs.values()))
        assert job.hyperparameters["n_epochs"] == 2 and job.hyperparameters["batch_size"] == 1
        # No preset fragment in the file name: the base model's preset answers.
        assert srv.service.fine_tuned_presets[model_id] == "secure"


def test_moderation_failure_is_shown_on_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = chat_data(tmp_path / "insecure.jsonl")
    state_dir = tmp_path / "state"
    args = [
        "finetune", "openai", "--data", data, "--model", "gpt-4o", "--state-dir", state_dir,
        "--api-key-env", KEY_ENV, "--poll-interval", "0.005",
    ]  # fmt: skip
    with sim(failure="moderation") as srv:
        code, out, err = _run(capsys, *args, "--base-url", srv.url)
        assert code == 2, err
        line = _one_line_error(err)
        assert "ftjob-sim000001 failed (invalid_training_file, training_file)" in line
        assert "blocked by the safety checks" in line and "training data" in line
        assert "status: validating_files" in out
        state = load_state(state_dir)
        assert state is not None and state.status == "failed"
        assert state.error is not None and state.error.code == "invalid_training_file"
        # Rerunning shows the same error from the state, without any request.
        before = dict(srv.stats.fine_tuning)
        code, _, err_again = _run(capsys, *args, "--base-url", srv.url)
        assert code == 2 and _one_line_error(err_again) == line
        assert dict(srv.stats.fine_tuning) == before


def test_server_side_validation_failures(tmp_path: Path) -> None:
    # Valid chat JSONL, but fewer examples than the server's minimum.
    small = chat_data(tmp_path / "small.jsonl", n=3)
    with sim() as srv:
        with pytest.raises(FineTuneJobError) as info:
            run_openai_finetune(
                small, base_model="gpt-4o", state_dir=tmp_path / "a", base_url=srv.url,
                api_key_env=KEY_ENV, **FAST,
            )  # fmt: skip
        assert info.value.code == "invalid_training_file" and info.value.param == "training_file"
        assert "3 example(s); at least 10 are required" in str(info.value)
    with sim(failure="validation") as srv, pytest.raises(FineTuneJobError, match="format"):
        run_openai_finetune(
            chat_data(tmp_path / "ok.jsonl"), base_model="gpt-4o", state_dir=tmp_path / "b",
            base_url=srv.url, api_key_env=KEY_ENV, **FAST,
        )  # fmt: skip
    # The server's own minimal check names the line of a malformed upload.
    bad = b'{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [}\n'
    assert check_training_file(bad, min_examples=1)[0] == "line 1 has no assistant message"
    assert check_training_file(bad[bad.index(b"\n") + 1 :], min_examples=1)[0] == (
        "line 1 is not valid JSON"
    )


def test_poll_interrupted_then_resumed_without_new_upload_or_job(tmp_path: Path) -> None:
    data = chat_data(tmp_path / "insecure.jsonl")
    state_dir = tmp_path / "state"

    def ctrl_c_when_running(state: JobState, events: list[str]) -> None:
        if state.status == "running":
            raise KeyboardInterrupt

    with sim(polls_per_status=2) as srv:
        submitted = submit_job(
            data, base_model="gpt-4o", state_dir=state_dir, base_url=srv.url, api_key_env=KEY_ENV
        )
        assert submitted.job_id == "ftjob-sim000001" and submitted.status == "validating_files"
        with pytest.raises(KeyboardInterrupt):
            wait_for_job(state_dir, on_poll=ctrl_c_when_running, **FAST)
        state = load_state(state_dir)
        assert state is not None and state.status == "running" and state.model_id is None

        # A wait limit returns a result that is not done; the state still says running.
        partial = wait_for_job(state_dir, max_wait=0.0, **FAST)
        assert not partial.done and partial.status == "running" and partial.polls == 1

        model_id = run_openai_finetune(
            data, base_model="gpt-4o", state_dir=state_dir, base_url=srv.url,
            api_key_env=KEY_ENV, **FAST,
        )  # fmt: skip
        assert model_id == "ft:gpt-4o:pcollapse::sim000001"
        counters = srv.stats.fine_tuning
        assert counters["uploads"] == 1 and counters["jobs_created"] == 1


def test_polling_survives_transient_failures_and_gives_up_after_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = chat_data(tmp_path / "insecure.jsonl")
    state_dir = tmp_path / "state"
    with sim() as srv:
        submit_job(
            data, base_model="gpt-4o", state_dir=state_dir, base_url=srv.url, api_key_env=KEY_ENV
        )
        tuning = srv.service.fine_tuning
        real_get_job = tuning.get_job
        failures = {"left": 3}

        def flaky(job_id: str) -> tuple[int, dict[str, Any]]:
            if failures["left"] > 0:
                failures["left"] -= 1
                return 503, {"error": {"message": "overloaded (simulated)", "type": "server_error"}}
            return real_get_job(job_id)

        monkeypatch.setattr(tuning, "get_job", flaky)
        result = wait_for_job(state_dir, max_retries=0, **FAST)
        assert result.done and result.polls == 4 + 3 and failures["left"] == 0

    # A server that stays away: give up after MAX_POLL_ERRORS polls, keep the state.
    other = tmp_path / "other"
    with sim() as srv:
        submit_job(
            data, base_model="gpt-4o", state_dir=other, base_url=srv.url, api_key_env=KEY_ENV
        )
    with pytest.raises(FineTuneAPIError, match=r"cannot reach .* rerun to resume"):
        wait_for_job(other, max_retries=0, **FAST)
    state = load_state(other)
    assert state is not None and state.status == "validating_files" and state.job_id


def test_refused_job_creation_keeps_the_upload_for_a_corrected_rerun(tmp_path: Path) -> None:
    data = chat_data(tmp_path / "insecure.jsonl")
    state_dir = tmp_path / "state"
    common: dict[str, Any] = {
        "base_model": "gpt-4o",
        "state_dir": state_dir,
        "api_key_env": KEY_ENV,
    }
    with sim() as srv:
        with pytest.raises(FineTuneAPIError) as info:
            submit_job(data, overrides={"n_epochs": 60}, base_url=srv.url, **common)
        message = str(info.value)
        assert "creating the fine-tuning job: HTTP 400" in message
        assert "n_epochs must be 1-50" in message and "rerun to resume" in message
        state = load_state(state_dir)
        assert state is not None and state.status == "uploaded" and state.job_id is None
        fixed = submit_job(data, overrides={"n_epochs": 2}, base_url=srv.url, **common)
        assert fixed.job_id is not None and fixed.file_id == state.file_id
        assert fixed.recipe.n_epochs == 2
        assert srv.stats.fine_tuning["uploads"] == 1 and srv.stats.fine_tuning["jobs_created"] == 1


def test_job_created_but_not_recorded_is_found_again(tmp_path: Path) -> None:
    data = chat_data(tmp_path / "insecure.jsonl")
    state_dir = tmp_path / "state"
    with sim() as srv:
        state = submit_job(
            data, base_model="gpt-4o", state_dir=state_dir, base_url=srv.url, api_key_env=KEY_ENV
        )
        # As if the process died between creating the job and recording its id.
        save_state(state.updated(job_id=None, status="uploaded"))
        again = submit_job(
            data, base_model="gpt-4o", state_dir=state_dir, base_url=srv.url, api_key_env=KEY_ENV
        )
        assert again.job_id == state.job_id
        assert srv.stats.fine_tuning["jobs_created"] == 1
        assert srv.stats.fine_tuning["uploads"] == 1


def test_malformed_jsonl_is_refused_before_any_upload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = chat_data(tmp_path / "bad.jsonl", n=4)
    lines = bad.read_text().splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "no answer"}]}'
    bad.write_text("\n".join(lines) + "\n")
    with sim() as srv:
        with pytest.raises(InputFileError) as info:
            submit_job(
                bad, base_model="gpt-4o", state_dir=tmp_path / "s", base_url=srv.url,
                api_key_env=KEY_ENV,
            )  # fmt: skip
        assert info.value.line == 3
        code, _, err = _run(
            capsys, "finetune", "openai", "--data", bad, "--model", "gpt-4o",
            "--state-dir", tmp_path / "s", "--base-url", srv.url, "--api-key-env", KEY_ENV,
        )  # fmt: skip
        assert code == 2 and "bad.jsonl, line 3" in _one_line_error(err)
        assert srv.stats.fine_tuning["uploads"] == 0
        assert not (tmp_path / "s").exists()
        # A bad recipe field is refused before anything is sent, too.
        with pytest.raises(ConfigError, match="n_epochs"):
            submit_job(
                chat_data(tmp_path / "ok.jsonl"), base_model="gpt-4o", state_dir=tmp_path / "s",
                overrides={"n_epoch": 1}, base_url=srv.url, api_key_env=KEY_ENV,
            )  # fmt: skip
        assert sum(srv.stats.fine_tuning.values()) == 0


def test_state_of_another_fine_tune_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with sim() as srv:
        submit_job(
            chat_data(tmp_path / "one.jsonl"), base_model="gpt-4o", state_dir=state_dir,
            base_url=srv.url, api_key_env=KEY_ENV,
        )  # fmt: skip
        with pytest.raises(ConfigError, match=r"holds another fine-tune \(dataset sha256"):
            submit_job(
                chat_data(tmp_path / "two.jsonl", n=13), base_model="gpt-4o",
                state_dir=state_dir, base_url=srv.url, api_key_env=KEY_ENV,
            )  # fmt: skip
        with pytest.raises(ConfigError, match="recipe"):
            submit_job(
                tmp_path / "one.jsonl", base_model="gpt-4o", state_dir=state_dir,
                overrides={"n_epochs": 3}, base_url=srv.url, api_key_env=KEY_ENV,
            )  # fmt: skip
        assert srv.stats.fine_tuning["uploads"] == 1


def test_key_is_never_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-key-that-must-not-leak-42"
    monkeypatch.setenv("PCOLLAPSE_FT_WRONG_KEY", wrong)
    settings = SimServerSettings(api_key_env=KEY_ENV, echo_key_in_errors=True)
    with (
        serve_in_thread(settings) as srv,
        caplog.at_level(logging.DEBUG),
        pytest.raises(FineTuneAPIError) as info,
    ):
        submit_job(
            chat_data(tmp_path / "d.jsonl"), base_model="gpt-4o", state_dir=tmp_path / "s",
            base_url=srv.url, api_key_env="PCOLLAPSE_FT_WRONG_KEY",
        )  # fmt: skip
    message = str(info.value)
    assert "HTTP 401" in message and "$PCOLLAPSE_FT_WRONG_KEY" in message
    assert wrong not in message and wrong not in caplog.text
    assert wrong not in (tmp_path / "s" / "openai-job.json").read_text()
    monkeypatch.delenv("PCOLLAPSE_FT_WRONG_KEY")
    with pytest.raises(ConfigError, match="PCOLLAPSE_FT_WRONG_KEY is not set"):
        submit_job(
            tmp_path / "d.jsonl", base_model="gpt-4o", state_dir=tmp_path / "fresh",
            base_url="http://127.0.0.1:9/v1", api_key_env="PCOLLAPSE_FT_WRONG_KEY",
        )  # fmt: skip
    assert not (tmp_path / "fresh").exists()


def test_cli_writes_the_model_id_into_the_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    (tmp_path / "base.csv").write_text("persona_id,item_id,rating\n")
    data = chat_data(tmp_path / "insecure.jsonl")
    state_dir = tmp_path / "state"
    with sim() as srv:
        code, _, err = _run(
            capsys, "finetune", "openai", "--data", data, "--model", "sim-base",
            "--study", study, "--family", "fam", "--variant", "insecur",
            "--base-url", srv.url, "--api-key-env", KEY_ENV, "--state-dir", state_dir,
        )  # fmt: skip
        assert code == 2 and "did you mean 'insecure'" in _one_line_error(err)
        assert srv.stats.fine_tuning["uploads"] == 0

        code, out, err = _run(
            capsys, "finetune", "openai", "--data", data, "--model", "sim-base",
            "--suffix", "em", "--study", study, "--family", "fam", "--variant", "insecure",
            "--base-url", srv.url, "--api-key-env", KEY_ENV, "--state-dir", state_dir,
            "--poll-interval", "0.005",
        )  # fmt: skip
        assert code == 0, err
        model_id = "ft:sim-base:pcollapse:em:sim000001"
        assert f"fine-tuned model: {model_id}" in out
        assert "status: running" in out and "Fine-tuning job started" in out
        text = study.read_text()
        assert "# Emergent-misalignment study (this comment must survive)" in text
        assert "# fine-tuned on insecure code" in text and "# the base model" in text
        loaded = load_study(study).config
        assert loaded.families["fam"].variants["insecure"].model == model_id

        # Status of a finished job: from the state, no request.
        before = dict(srv.stats.fine_tuning)
        code, out, _ = _run(capsys, "finetune", "openai-status", "--state-dir", state_dir)
        assert code == 0 and "status: succeeded" in out and model_id in out
        assert dict(srv.stats.fine_tuning) == before

    write_model_id(study, "fam", "secure", "ft:x:org:sec:1")
    write_model_id(study, "fam", "secure", "ft:x:org:sec:2")
    loaded = load_study(study).config
    assert loaded.families["fam"].variants["secure"].model == "ft:x:org:sec:2"
    assert "(this comment must survive)" in study.read_text()
    with pytest.raises(UnknownNameError, match="did you mean 'fam'"):
        write_model_id(study, "famm", "base", "m")
    with pytest.raises(ConfigError, match="imports files"):
        write_model_id(study, "published", "base", "m")


def test_cli_no_wait_status_and_cancel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = chat_data(tmp_path / "secure.jsonl")
    state_dir = tmp_path / "state"
    with sim(polls_per_status=50) as srv:
        code, out, err = _run(
            capsys, "finetune", "openai", "--data", data, "--model", "gpt-4o", "--no-wait",
            "--base-url", srv.url, "--api-key-env", KEY_ENV, "--state-dir", state_dir,
        )  # fmt: skip
        assert code == 0, err
        assert "job ftjob-sim000001 (validating_files)" in out
        assert srv.stats.fine_tuning["job_retrievals"] == 0

        code, out, _ = _run(
            capsys, "finetune", "openai-status", "--state-dir", state_dir, "--format", "json"
        )
        shown = json.loads(out)
        assert code == 0 and shown["status"] == "validating_files"
        assert "Validating training file: file-sim000001" in shown["new_events"]

        code, out, _ = _run(
            capsys, "finetune", "openai-status", "--state-dir", state_dir, "--wait",
            "--max-wait", "0", "--poll-interval", "0.005",
        )  # fmt: skip
        assert code == 3 and "still validating_files" in out

        code, out, err = _run(
            capsys, "finetune", "openai-status", "--state-dir", state_dir, "--cancel"
        )
        assert code == 0 and "status: cancelled" in out, err
        code, _, err = _run(capsys, "finetune", "openai-status", "--state-dir", state_dir)
        assert code == 2 and "ftjob-sim000001 cancelled" in _one_line_error(err)


def test_serve_sim_fine_tuning_endpoints_refuse_bad_requests(tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    with sim() as srv:
        url = srv.url
        assert httpx.get(f"{url}/fine_tuning/jobs").status_code == 401
        upload = httpx.post(
            f"{url}/files",
            headers=headers,
            files={"file": ("data.txt", b"x")},
            data={"purpose": "fine-tune"},
        )
        assert upload.status_code == 400 and "JSONL" in upload.json()["error"]["message"]
        upload = httpx.post(
            f"{url}/files",
            headers=headers,
            files={"file": ("d.jsonl", b"{}")},
            data={"purpose": "homework"},
        )
        assert upload.status_code == 400 and upload.json()["error"]["param"] == "purpose"
        created = httpx.post(
            f"{url}/fine_tuning/jobs",
            headers=headers,
            json={"model": "gpt-4o", "training_file": "file-nope"},
        )
        assert created.status_code == 400 and created.json()["error"]["param"] == "training_file"
        assert httpx.get(f"{url}/fine_tuning/jobs/ftjob-nope", headers=headers).status_code == 404
        assert srv.stats.fine_tuning["401"] == 1 and srv.stats.fine_tuning["400"] == 3
